"""Mixed precision for ``quantize(budget=...)``: which layers stay in float, and why.

The error of a (partly) quantized model is ``1 - mean cosine`` between its first output and
the float model's, one cosine per sample (the output's first axis; the rest flattened; an
output of rank < 2 is one sample), over the first ``sensitivity_batches`` calibration
batches. ``budget=0.005`` asks for a mean cosine of at least 0.995.

1. Simulate. One clone of the model holds every edit ``quantize`` would make, behind
   switches: each activation ``x`` becomes ``If(s, DQ(Q(x)), x)`` per consumer, where ``s``
   is a bool graph input (the consumer layer's own, or the activation's for any other
   consumer); each layer's weight and bias become graph inputs, fed the float array or its
   int8/int32 round trip (computed once in numpy, bit-identical to the DequantizeLinear
   output). So one ONNX Runtime session runs any mix of float and quantized layers, and
   nothing is rebuilt or re-dequantized per layer. A run costs ~1.2x the float model's on
   MiniLM; gating with ``Where`` (which computes both sides) cost ~1.4x, and int8 weights +
   DequantizeLinear behind ``Where`` ~4x.
2. Sensitivity. Per layer, the error when only it is quantized: its weight, bias, the
   activations it reads and, where the policy quantizes it, its output.
3. Choice. All layers quantized; while the error exceeds the budget, the most sensitive
   ones stay in float: how many is found by doubling, then bisection (assuming the error
   falls as more layers stay float); then each float layer, least sensitive first, is
   quantized again if the budget still holds.

What a float layer means in the result (the simulation runs the same rule): an activation
gets its Q -> DQ pair when at least one quantized layer wants it; then every consumer reads
the DQ output except the float layers, which read the float value.

The simulation dequantizes in float where the runtime runs integer kernels, so the final
model's error is measured again, on the real model; a note says so when it misses the
budget that the simulation met.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from onnxpress.backends.ort_runner import Runner
from onnxpress.ir import quant_math
from onnxpress.ir.agreement import sample_cosines
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.passes.calibration_data import Batch
from onnxpress.passes.quantize.static.migration import Migration
from onnxpress.passes.quantize.static.policy import Target
from onnxpress.passes.quantize.static.rewrite import weight_round_trip

__all__ = ["Choice", "LayerReport", "choose_float_layers", "fewest_float", "output_error",
           "summarize"]

logger = logging.getLogger(__name__)

#: prefix of the switch inputs the simulation adds
SWITCH = "onnxpress_quantized"


@dataclasses.dataclass
class LayerReport:
    name: str
    op: str
    sensitivity: float  # the error with only this layer quantized
    float: bool  # kept in float


@dataclasses.dataclass
class Choice:
    float_nodes: set[ir.Node]  # nodes of the caller's model
    layers: list[LayerReport]
    all_quantized_error: float
    error: float  # simulated, with the float layers chosen
    reference: list[np.ndarray]  # the float model's first output per batch
    measurements: int
    seconds: float


class Simulator:
    """The switchable clone of step 1; ``run(batch, on)`` runs it with layers ``on`` (indices
    into ``layers``) quantized and every other layer in float."""

    def __init__(
        self,
        model: ir.Model,
        layers: Sequence[Target],
        params: Mapping[ir.Value, quant_math.QuantParams],
        fixed_float: Collection[ir.Node] = (),
        moved: Mapping[ir.Value, Migration] | None = None,
    ) -> None:
        moved = moved or {}
        clone = model.clone()
        nodes, values = _correspondence(model.graph, clone.graph)
        graph = clone.graph
        self._layer_switches = [_input(graph, f"{SWITCH}_layer_{i}") for i in range(len(layers))]
        self._value_switches = [_input(graph, f"{SWITCH}_value_{j}") for j in range(len(params))]
        self._wanting = [[i for i, t in enumerate(layers) if v in t.activations] for v in params]
        #: per layer: (input name, float array, quantized round trip) of its weight and bias
        self._constants = [_constants_as_inputs(graph, i, t, nodes[t.node], params,
                                                moved.get(t.node.inputs[0]))
                           for i, t in enumerate(layers)]
        by_node = {nodes[t.node]: s for t, s in zip(layers, self._layer_switches)}
        by_node.update((nodes[n], None) for n in fixed_float)
        outputs = {v for t in layers for v in t.activations if v not in t.node.inputs}
        for (value, p), switch in zip(params.items(), self._value_switches):
            # as quantize inserts them: a layer input's other readers keep the float value
            _switch_activation(graph, values[value], _simulated(p, moved.get(value)),
                               switch if value in outputs else None, by_node)
        self._output = model.graph.outputs[0].name
        self._runner = Runner(clone)

    def run(self, batch: Batch, on: Collection[int]) -> np.ndarray:
        feeds = dict(batch)
        for i, (switch, constants) in enumerate(zip(self._layer_switches, self._constants)):
            feeds[switch.name] = np.array(i in on)
            for name, original, quantized in constants:
                feeds[name] = quantized if i in on else original
        for wanting, switch in zip(self._wanting, self._value_switches):
            feeds[switch.name] = np.array(any(i in on for i in wanting))
        return self._runner.run(feeds)[self._output]


def _correspondence(
    graph: ir.Graph, clone: ir.Graph
) -> tuple[dict[ir.Node, ir.Node], dict[ir.Value, ir.Value]]:
    """Node -> node and value -> value from ``graph`` to its clone."""
    values = dict(zip(graph.inputs, clone.inputs))
    values.update((v, clone.initializers[name]) for name, v in graph.initializers.items())
    nodes = {}
    for original, copy in zip(graph, clone):
        nodes[original] = copy
        values.update(zip(original.outputs, copy.outputs))
    return nodes, values


def _input(graph: ir.Graph, name: str, like: np.ndarray | None = None) -> ir.Value:
    """A new graph input: a bool scalar, or an array shaped like ``like``."""
    dtype = ir.DataType.BOOL if like is None else ir.DataType.from_numpy(like.dtype)
    shape = ir.Shape([] if like is None else like.shape)
    value = ir.Value(name=name, type=ir.TensorType(dtype), shape=shape)
    graph.inputs.append(value)
    return value


def _constants_as_inputs(
    graph: ir.Graph, index: int, target: Target, node: ir.Node,
    params: Mapping[ir.Value, quant_math.QuantParams], migration: Migration | None,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The layer's weight (and int32 bias) as graph inputs: (name, float, round trip). A
    migrated weight's round trip is divided back by the factors, as its input is simulated
    unsmoothed (``_simulated``)."""
    if target.weight is None:
        return []
    assert target.axis is not None
    weight = constant_array(node.inputs[target.weight])
    assert weight is not None
    weight = np.asarray(weight, np.float32)
    round_trip, p = weight_round_trip(weight, target.axis, migration)
    constants = [(target.weight, weight, round_trip)]
    first = target.node.inputs[0]  # the activation input of Conv, Gemm and MatMul
    bias = constant_array(node.inputs[target.bias]) if target.bias is not None else None
    if bias is not None and first in params:
        q, scale = quant_math.int32_bias(bias, float(params[first].scale), p.scale)
        constants.append((target.bias, np.asarray(bias, np.float32), q.astype(np.float32) * scale))
    named = []
    for position, original, quantized in constants:
        value = _input(graph, f"{SWITCH}_layer_{index}_input_{position}", original)
        node.replace_input_with(position, value)
        named.append((value.name, original, quantized))
    return named


def _simulated(p: quant_math.QuantParams, migration: Migration | None) -> quant_math.QuantParams:
    """What the layers see of a migrated activation, unsmoothed: ``s * DQ(Q(x / s))``, a
    per-channel round trip at scales ``c * s``."""
    return p if migration is None else migration.quantizer(p)


def _switch_activation(
    graph: ir.Graph, value: ir.Value, p: quant_math.QuantParams, switch: ir.Value | None,
    by_node: Mapping[ir.Node, ir.Value | None],
) -> None:
    """Each consumer of ``value`` reads ``If(s, DQ(Q(value)), value)``, ``s`` its switch: a
    layer's own, ``switch`` for every other consumer (None: those read ``value``, as a
    fixed-float node does). ``If`` computes the pair only when it is on (``Where`` would always)."""
    uses = [(use.node, use.idx) for use in value.uses()]
    builder = Builder(graph)
    shape = () if p.axis is None else np.shape(p.scale)
    scale = builder.initializer(np.asarray(p.scale, np.float32).reshape(shape),
                                f"{value.name}_scale")
    zero = builder.initializer(np.asarray(p.zero_point).reshape(shape), f"{value.name}_zero_point")
    axis = {} if p.axis is None else {"axis": p.axis}
    gated: dict[ir.Value, ir.Value] = {}
    for consumer, _ in uses:
        own = by_node.get(consumer, switch)
        if own is not None and own not in gated:
            gated[own] = builder.op("If", [own], {
                "then_branch": _branch(f"{value.name}_on_{own.name}", value, axis, scale,
                                       zero),
                "else_branch": _branch(f"{value.name}_off_{own.name}", value, {})})
            gated[own].dtype, gated[own].shape = value.dtype, value.shape
    builder.insert_after(value.producer())
    for consumer, index in uses:
        own = by_node.get(consumer, switch)
        if own is not None:
            consumer.replace_input_with(index, gated[own])


def _branch(name: str, value: ir.Value, axis: dict[str, int], *params: ir.Value) -> ir.Graph:
    """A branch of the If above: ``DQ(Q(value))`` given ``params`` (scale, zero point), else
    ``Identity(value)``."""
    tape = ir.tape.Tape()
    if params:
        quantized = tape.op("QuantizeLinear", [value, *params], axis, name=f"{name}_Q")
        quantized.name = f"{name}_quantized"
        out = tape.op("DequantizeLinear", [quantized, *params], axis, name=f"{name}_DQ")
    else:
        out = tape.op("Identity", [value], name=name)
    out.name, out.dtype, out.shape = name, value.dtype, value.shape
    return ir.Graph((), [out], nodes=tape.nodes, name=name)




def _error(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    cosines = np.concatenate([sample_cosines(r, o) for r, o in zip(reference, outputs)])
    return float(1.0 - cosines.mean())


def output_error(model: ir.Model, batches: Sequence[Batch],
                 reference: Sequence[np.ndarray]) -> float:
    """The error of ``model`` (as ONNX Runtime runs it) against the float ``reference``."""
    runner = Runner(model)
    name = model.graph.outputs[0].name
    return _error(reference, [runner.run(batch)[name] for batch in batches])


def choose_float_layers(
    model: ir.Model,
    layers: Sequence[Target],
    params: Mapping[ir.Value, quant_math.QuantParams],
    batches: Sequence[Batch],
    budget: float,
    fixed_float: Collection[ir.Node] = (),
    moved: Mapping[ir.Value, Migration] | None = None,
) -> Choice:
    """Steps 1-3 of the module docstring. ``fixed_float``: nodes that stay float whatever
    happens (planned layers whose input could not be quantized); ``moved``: the migrated
    activations (:mod:`.migration`)."""
    start = time.perf_counter()
    simulator = Simulator(model, layers, params, fixed_float, moved)
    reference = [simulator.run(batch, ()) for batch in batches]
    measured: dict[frozenset[int], float] = {}

    def error(on: frozenset[int]) -> float:
        if on not in measured:
            measured[on] = _error(reference, [simulator.run(batch, on) for batch in batches])
        return measured[on]

    sensitivity = [error(frozenset({i})) for i in tqdm(range(len(layers)), desc="sensitivity",
                                            unit="layer", disable=None, leave=False)]
    order = sorted(range(len(layers)), key=lambda i: (-sensitivity[i], i))
    everything = frozenset(range(len(layers)))
    all_quantized = error(everything)
    kept = fewest_float(order, lambda kept: error(everything - kept), budget)
    final = error(everything - kept)
    reports = [LayerReport(t.node.name or f"#{i}", t.node.op_type, sensitivity[i], i in kept)
               for i, t in enumerate(layers)]
    seconds = time.perf_counter() - start
    logger.info("sensitivity: %d layers, %d measurements, %.1fs", len(layers), len(measured),
                seconds)
    return Choice({layers[i].node for i in kept}, reports, all_quantized, final, reference,
                  len(measured), seconds)


def fewest_float(
    order: Sequence[int], error: Callable[[frozenset[int]], float], budget: float
) -> frozenset[int]:
    """The float set (step 3): a prefix of ``order`` (most sensitive first) sized by doubling
    and bisection, then thinned, least sensitive first. ``error(float set)``; the empty set
    is all quantized."""
    if error(frozenset()) <= budget:
        return frozenset()
    fails, passes = 0, 1  # prefix lengths: ``fails`` misses the budget
    while passes < len(order) and error(frozenset(order[:passes])) > budget:
        fails, passes = passes, 2 * passes
    passes = min(passes, len(order))  # every layer in float meets any budget >= 0
    while passes - fails > 1:
        middle = (fails + passes) // 2
        if error(frozenset(order[:middle])) <= budget:
            passes = middle
        else:
            fails = middle
    kept = set(order[:passes])
    for i in reversed(order[:passes]):
        if error(frozenset(kept - {i})) <= budget:
            kept.discard(i)
    return frozenset(kept)


def summarize(choice: Choice, budget: float, final_error: float) -> tuple[dict, list[str]]:
    """Stats and notes for the pass's report: the per-layer table, and the float layers by
    name (the answer to "which layer broke my model?")."""
    floats = sorted((r for r in choice.layers if r.float), key=lambda r: -r.sensitivity)
    stats = {
        "budget": budget,
        "float_layers": len(floats),
        "quantized_layers": len(choice.layers) - len(floats),
        "all_quantized_error": choice.all_quantized_error,
        "simulated_error": choice.error,
        "final_error": final_error,
        "sensitivity_seconds": round(choice.seconds, 3),
        "measurements": choice.measurements,
        "layers": [dataclasses.asdict(r) for r in choice.layers],
    }
    notes = [f"budget {budget:g} (1 - mean output cosine): {len(floats)} of {len(choice.layers)} "
             f"layers kept in float; error {final_error:.3g}, all quantized "
             f"{choice.all_quantized_error:.3g}"]
    if floats:
        notes.append("kept in float: " + ", ".join(
            f"{r.name!r} (sensitivity {r.sensitivity:.1e})" for r in floats))
    else:
        worst = sorted(choice.layers, key=lambda r: -r.sensitivity)[:3]
        notes.append("every layer quantized within the budget; most sensitive: " + ", ".join(
            f"{r.name!r} ({r.sensitivity:.1e})" for r in worst))
    if floats and len(floats) == len(choice.layers):
        notes.append(f"the budget {budget:g} is met only with every layer in float")
    if final_error > budget:
        notes.append(f"the budget {budget:g} is not met: the quantized model measures "
                     f"{final_error:.3g} where the float simulation gave {choice.error:.3g}; "
                     "give a larger budget or more sensitivity_batches")
    return stats, notes
