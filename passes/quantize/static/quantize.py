"""``quantize``: static post-training quantization in QDQ form.

Calibrates the activations the policy picks (:mod:`.policy`) on the pass's data, then:
- each picked activation gets one ``QuantizeLinear -> DequantizeLinear`` pair (per tensor,
  uint8 asymmetric by default for x86 CPU: ONNX Runtime's signed-activation kernels run
  2-4x slower there; ``activations=int8`` gives symmetric int8, what TensorRT wants);
- each weight is stored as int8 (symmetric, per output channel) + ``DequantizeLinear`` — no
  float copy and no weight QuantizeLinear, so the file is 4x smaller without ``fold-qdq``;
- a Conv/Gemm bias whose input is quantized becomes int32 at scale ``s_input * s_weight``
  (what integer kernels add), + ``DequantizeLinear``;
- ONNX Runtime's fused ``com.microsoft.Attention`` (from ``fuse-for-ort``) counts as a
  layer: its input pair and packed Q/K/V weight (per column) are quantized, and
  ``lower-qdq`` turns it into ``QAttention``;
- embedding tables (Gather from a constant float matrix) become int8 rows with a scale each
  (:mod:`.embeddings`; ``embeddings=false`` keeps them float; the budget does not weigh
  them);
- a tied LM head (``MatMul(x, Transpose(table))`` beside the table's lookup) is first stored
  once in the head's layout (:mod:`.tied_head`, exact), so it is quantized as a weight and
  its lookups read the same int8 copy: SmolLM2's int8 file 250 -> 137 MB (163.3M -> 135.0M
  parameters), prefill about 2.0x -> 2.4x fp32, perplexity 43.80 -> 44.03 (fp32 42.09).

Who reads the dequantized value: the quantized layers. Other readers of a layer's *input*
(the residual Add beside a MatMul reading a LayerNorm output) keep the float value, so the
residual stream carries no quantization error (MiniLM: mean cosine 0.990 -> 0.994). A
layer's quantized *output* (a Conv's, after its Relu) is read dequantized by everyone, as
ONNX Runtime fuses ``Conv -> Q`` only when the Q is the Conv's sole reader.

``smooth=alpha`` (0: off) migrates activation outliers into the weights, SmoothQuant-style,
for activations only MatMul-like layers quantize, where that lowers their output error
measured on rows sampled in the calibration run (:mod:`.migration`): folded into the
producing LayerNorm when nothing else reads it, else one ``Mul`` on the quantized branch.
MiniLM: mean cosine 0.994 -> 0.996. SmolLM2-135M (int8 preset, perplexity on
``smollm2-text``, fp32 42.09): 48.64 at alpha 0.5, 43.80 at 0.75 (the ``int8`` preset's),
44.25 at 0.8; an estimate from the calibrated ranges alone refused 31 of the 120 migrations
at 0.8 (44.93).

Bias correction (``bias_correction``, on by default): each quantized layer's float bias
absorbs the mean output shift its int8 weight causes, from per-channel input means gathered
in the calibration run (:mod:`.bias_correction`). Output error ``1 - cosine`` vs fp32:
ResNet-18 0.00082 -> 0.00060, ResNet-50 0.0170 -> 0.0161, MobileNetV2 0.0230 -> 0.0224,
digits CNN 0.00008 -> 0.00003; MiniLM calibrated on 64 real sentences 0.00383 -> 0.00379.
It needs representative data: on 16 random-token MiniLM inputs it made the error worse
(0.0046 -> 0.0052). The budget's simulator does not model it (it only lowers the error).

Mixed precision (``budget``): the budget is the allowed degradation of the model's first
output against fp32 on the calibration data, ``1 - mean cosine`` (one cosine per sample,
flattened), measured on the first ``sensitivity_batches`` batches (an ``.npz`` given as
``--calibration`` yields one sample per batch: raise it there); ``budget=0.005`` asks for
a mean cosine >= 0.995 (a pipeline string may also say ``budget=0.5%``). Each layer's
sensitivity (the error with only it quantized) is measured, and the most sensitive layers
stay in float until the model meets the budget (:mod:`.sensitivity`). The report lists
every layer's sensitivity and names the float ones. A float layer reads its activations in
float and keeps its float weight; an activation is quantized when a quantized layer wants
it. Planned layers whose input could not be quantized stay fully float under a budget.
Without a budget every planned layer is quantized, as before.

Lossy by design: the report's ``check`` (or ``onnxpress compare``) measures what it costs.
Without data the pass stops with a one-line error: ranges must come from real inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from onnxpress.backends.opset_upgrade import upgrade
from onnxpress.errors import BadInputError
from onnxpress.ir import quant_math
from onnxpress.ir.analysis import all_graphs, constant_array, opset_version
from onnxpress.ir.branches import loop_body_nodes
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import TensorShapeInference, remove_unread
from onnxpress.ir.layers import LINEAR_OPS
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.calibration_data import Batch
from onnxpress.passes.quantize.calibrate.calibration import collect
from onnxpress.passes.quantize.static.bias_correction import (
    ChannelMean,
    bias_site,
    corrected,
    input_axis,
    output_shift,
)
from onnxpress.passes.quantize.static.embeddings import quantize_embeddings
from onnxpress.passes.quantize.static.migration import (
    Migration,
    RowSample,
    candidates,
    fold_into_norm,
    migrations,
)
from onnxpress.passes.quantize.static.policy import Plan, Target, plan_model
from onnxpress.passes.quantize.static.rewrite import (
    QuantizedWeight,
    dequantized_bias,
    dequantized_weight,
    qdq,
)
from onnxpress.passes.quantize.static.sensitivity import (
    choose_float_layers,
    output_error,
    summarize,
)
from onnxpress.passes.quantize.static.tied_head import untie_heads

__all__ = ["Quantize"]

logger = logging.getLogger(__name__)

#: the int8 weights a rewrite made, by float weight, migration and graph
Weights = dict[tuple[ir.Value, Migration | None, ir.Graph], QuantizedWeight]
#: calibration batches an opset upgrade is checked on
UPGRADE_BATCHES = 2
#: a calibrated |range| above this is a mask or sentinel value, not an activation
MAX_ACTIVATION_RANGE = 1e5


@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    name = "quantize"
    visits_subgraphs = True  # If branches; Loop/Scan bodies are counted in a note
    renamed = {"calibration": "observer"}  # --calibration is the data; this, how it is read

    observer: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"  # activation ranges
    activations: Literal["uint8", "int8"] = "uint8"
    # Attention: com.microsoft's; Add: a residual join (policy._joining)
    ops: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "Attention", "Add")
    outputs: tuple[str, ...] = ("Conv",)  # ops whose output is quantized too (after a Relu)
    activation_matmul: bool = True  # MatMul of two activations (attention)
    max_batches: int = 64
    exclude: tuple[str, ...] = ()  # node names kept in float
    # grouped/depthwise Conv too; off by default: on ONNX Runtime CPU their int8 kernels are
    # slower than fp32 (policy's cost rule); TensorRT's int8 preset turns it on
    grouped: bool = False
    # keep float the Conv groups whose int8 saving is smaller than their Q/DQ edges
    # (.cost); the int8 preset for ort-cpu turns it on
    cost: bool = False
    min_rows: int = 0  # MatMul/Gemm with fewer rows per sample stay float (cost rule)
    budget: float | None = None  # allowed 1 - mean output cosine vs fp32 (module docstring)
    embeddings: bool = True  # Gather tables as int8 rows (.embeddings)
    smooth: float = 0.0  # SmoothQuant alpha folded into QuantizeLinear (.migration); 0: off
    bias_correction: bool = True  # biases absorb the weights' rounding shift (.bias_correction)
    int32_bias: bool = True  # Conv/Gemm biases as int32 DQ (QLinearConv's); false: float (TensorRT)
    sensitivity_batches: int = 4  # calibration batches the budget is measured on
    data: Any = data_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget >= 0):
            raise BadInputError(f"quantize(budget={self.budget}): give a fraction >= 0, "
                                "e.g. 0.005 (or 0.5%) for a mean output cosine >= 0.995")
        if not 0 <= self.smooth < 1:
            raise BadInputError(f"quantize(smooth={self.smooth}): give an alpha in [0, 1), "
                                "e.g. 0.5; 0 turns migration off")
        if self.sensitivity_batches < 1:
            raise BadInputError("quantize(sensitivity_batches=...) must be at least 1")

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False,
                           stats={"nodes": 0, "activations": 0, "weights": 0, "biases": 0})
        if self.data is None:
            raise BadInputError("quantize needs calibration data: give --calibration FILE.npz "
                                "(arrays named after the model's inputs)")
        upgrading = (opset_version(model) or 0) < 13  # per-channel DequantizeLinear
        data, head = self._data(max(UPGRADE_BATCHES if upgrading else 0,
                                    self.sensitivity_batches if self.budget is not None else 0))
        if upgrading:
            result.notes.append(upgrade(model, 13, head[:UPGRADE_BATCHES]))
        sample = head[:self.sensitivity_batches] if self.budget is not None else []
        graph = model.graph
        if any(v.dtype is None for node in graph.all_nodes() for v in node.outputs):
            # TorchScript exports carry no intermediate types, and the policy quantizes
            # float32 tensors only: without types it would find nothing
            result.notes += TensorShapeInference(self.name)(model).notes
        result.stats["tied_heads"] = untie_heads(graph)
        chosen = plan_model(model, ops=list(self.ops), quantize_outputs=list(self.outputs),
                            activation_matmul=self.activation_matmul,
                            exclude=list(self.exclude), grouped=self.grouped,
                            cost=self.cost, min_rows=self.min_rows)
        result.notes.extend(chosen.notes)
        result.stats["kept_float"] = chosen.kept_float
        params, moved, means = self._calibrate(model, chosen, data, result.notes)
        result.stats["smoothed"] = len(moved)
        if self.bias_correction:
            result.stats["biases_corrected"] = 0
        if self.budget is None:
            weights = self._rewrite(model, chosen, params, moved, set(), result.stats, means)
        else:
            weights = self._rewrite_within_budget(model, chosen, params, moved, sample, result,
                                                  means)
        if self.embeddings:
            # a tied head's int8 weight is the table: its lookups read that copy
            shared = {value: q for (value, _, owner), q in weights.items() if owner is graph}
            result.stats["embeddings"] = quantize_embeddings(graph, shared)
            remove_unread(list(graph.initializers.values()), producers=())
        result.modified = bool(result.stats["nodes"] or result.stats["activations"]
                               or result.stats.get("embeddings"))
        skipped = sum(1 for _ in loop_body_nodes(model.graph))
        if skipped:
            result.notes.append(f"quantize: {skipped} nodes inside Loop/Scan bodies were not "
                                "visited")
        if not result.modified:
            why = _nothing_quantized(model, chosen, set(self.ops))
            logger.warning("quantize: nothing quantized: %s", why)
            result.notes.append(f"warning: nothing quantized: {why}")
        return result

    def _data(self, peek: int) -> tuple[Iterable[Batch], list[Batch]]:
        """The calibration stream, and its first ``peek`` batches (for the opset upgrade's
        check and the budget's measurement), read once, so that a one-shot iterable still
        serves both."""
        if peek == 0:
            return self.data, []
        stream = iter(self.data)
        head = list(itertools.islice(stream, peek))
        return itertools.chain(head, stream), head

    def _rewrite_within_budget(
        self, model: ir.Model, chosen: Plan, params: dict[ir.Value, quant_math.QuantParams],
        moved: dict[ir.Value, Migration], sample: list[Batch], result: PassStats,
        means: Mapping[ir.Value, ChannelMean],
    ) -> Weights:
        assert self.budget is not None
        layers = [t for t in chosen.targets if _ready(t, params)]
        fixed = {t.node for t in chosen.targets if not _ready(t, params)}
        if not layers:
            result.notes.append("budget: no layer can be quantized, nothing to choose")
            return self._rewrite(model, chosen, params, moved, fixed, result.stats, means)
        choice = choose_float_layers(model, layers, params, sample, self.budget, fixed, moved)
        weights = self._rewrite(model, chosen, params, moved, choice.float_nodes | fixed,
                                result.stats, means)
        stats, notes = summarize(choice, self.budget,
                                 output_error(model, sample, choice.reference))
        result.stats.update(stats)
        result.notes.extend(notes)
        return weights

    def _rewrite(
        self, model: ir.Model, chosen: Plan, params: dict[ir.Value, quant_math.QuantParams],
        moved: dict[ir.Value, Migration], keep_float: Collection[ir.Node],
        stats: dict[str, Any], means: Mapping[ir.Value, ChannelMean],
    ) -> Weights:
        """Quantize every planned layer but ``keep_float``, and each activation a quantized
        layer wants; the float layers keep reading their float inputs. The int8 weights
        made, by float weight, migration and graph."""
        weights: Weights = {}
        wanted: set[ir.Value] = set()
        quantized: set[ir.Node] = set()
        outputs: set[ir.Value] = set()  # quantized after a layer, not before one
        for target in chosen.targets:
            if target.node in keep_float:
                continue
            wanted.update(target.activations)
            quantized.add(target.node)
            outputs.update(v for v in target.activations if v not in target.node.inputs)
            if self._quantize_target(target, params, moved, weights, stats, means):
                stats["nodes"] += 1
        for value, p in params.items():
            if value not in wanted:
                continue
            readers = None if value in outputs else quantized
            if _insert_qdq(value, p, moved.get(value), keep_float, readers):
                stats["activations"] += 1
        for graph in all_graphs(model):
            remove_unread(list(graph.initializers.values()), producers=())
        return weights

    def _calibrate(
        self, model: ir.Model, chosen: Plan, data: Iterable[Batch], notes: list[str]
    ) -> tuple[dict[ir.Value, quant_math.QuantParams], dict[ir.Value, Migration],
               dict[ir.Value, ChannelMean]]:
        """Activation parameters, migrations, and (for bias correction) the mean of each
        layer input per channel."""
        if not chosen.activations:
            return {}, {}, {}
        readers = candidates(chosen) if self.smooth else {}
        means = {}
        for target in chosen.targets if self.bias_correction else ():
            axis, first = input_axis(target), target.node.inputs[0]
            if axis is not None and first is not None and constant_array(first) is None:
                means.setdefault(first, ChannelMean(axis))
        samples = {value: RowSample() for value in readers}
        feed: dict[str, Any] = {v.name: mean for v, mean in means.items()}
        for value, sample in samples.items():
            feed[value.name] = _both(feed[value.name], sample) if value.name in feed else sample
        observers = collect(model, [v.name for v in chosen.activations], data,
                            method=self.observer, max_batches=self.max_batches,
                            per_channel={v.name: -1 for v in readers}, feed=feed)
        params, ranges = {}, {}
        unseen = [v.name for v in chosen.activations if v.name not in observers]
        if unseen:
            notes.append(f"{len(unseen)} activations inside If branches the calibration data "
                         f"never took (e.g. {unseen[0]!r}) have no range: their layers stay "
                         "in float; add samples that take those branches")
        for value in chosen.activations:
            if value.name not in observers:
                continue
            lo, hi = observers[value.name].range()
            if max(-float(np.min(lo)), float(np.max(hi))) > MAX_ACTIVATION_RANGE:
                notes.append(f"activation {value.name!r} spans [{np.min(lo):.3g}, "
                             f"{np.max(hi):.3g}], a mask or sentinel range; left in float")
                continue
            if value in readers and np.ndim(lo) == 1:
                ranges[value] = (lo, hi)
            params[value] = self._params(float(np.min(lo)), float(np.max(hi)))
        moved = {}
        for value, (migration, lo, hi) in migrations(ranges, readers, self.smooth,
                                                     samples).items():
            moved[value] = migration
            params[value] = self._params(lo, hi)
        return params, moved, means

    def _params(self, lo: float, hi: float) -> quant_math.QuantParams:
        return quant_math.params_from_range(lo, hi, dtype=self.activations,
                                            symmetric=self.activations == "int8")

    def _quantize_target(
        self,
        target: Target,
        params: dict[ir.Value, quant_math.QuantParams],
        moved: dict[ir.Value, Migration],
        weights: Weights,
        stats: dict[str, int],
        means: Mapping[ir.Value, ChannelMean],
    ) -> bool:
        node = target.node
        graph = node.graph
        assert graph is not None
        if not _ready(target, params):
            return False  # an input stayed float (e.g. its range looked like a mask)
        activation_inputs = _activation_inputs(target)
        if target.weight is None:
            return bool(activation_inputs)
        weight = node.inputs[target.weight]
        assert weight is not None and target.axis is not None
        migration = moved.get(node.inputs[0])
        if (weight, migration, graph) not in weights:  # per graph: a branch's DQ stays in it
            weights[weight, migration, graph] = dequantized_weight(
                graph, node, weight, target.axis, migration)
            stats["weights"] += 1
        quantized = weights[weight, migration, graph]
        mean = means[node.inputs[0]].mean if node.inputs[0] in means else None
        if mean is not None:
            stats["biases_corrected"] += _correct_bias(graph, target, weight, quantized, mean)
        node.replace_input_with(target.weight, quantized.value)
        if (self.int32_bias and target.bias is not None and activation_inputs
                and activation_inputs[0] in params):
            input_scale = params[activation_inputs[0]].scale
            bias = node.inputs[target.bias]
            node.replace_input_with(target.bias, dequantized_bias(
                graph, node, bias, float(input_scale), quantized.scale))
            stats["biases"] += 1
        return True


def _nothing_quantized(model: ir.Model, chosen: Plan, ops: set[str]) -> str:
    """Why a quantize changed nothing, for the warning."""
    ops = ops & LINEAR_OPS
    inside = sum(1 for node in loop_body_nodes(model.graph) if node.op_type in ops)
    if chosen.targets:
        return (f"{len(chosen.targets)} layers were planned and every one stayed in float "
                "(see the notes above)")
    if chosen.kept_float:
        return (f"the cost rule kept all {chosen.kept_float} layers in float, as int8 would "
                "run them slower here (see its notes)")
    if inside:
        return (f"the {inside} {'/'.join(sorted(ops))} nodes sit inside Loop/Scan bodies, "
                "which quantize does not visit")
    return f"the main graph has no {'/'.join(sorted(ops))} with a float input to quantize"


def _correct_bias(graph: ir.Graph, target: Target, weight: ir.Value,
                  quantized: QuantizedWeight, mean: np.ndarray) -> bool:
    site = bias_site(target)
    array = constant_array(weight)
    if site is None or array is None:
        return False
    error = quantized.round_trip() - np.asarray(array, np.float32)
    return corrected(graph, site, output_shift(error, target, mean))


def _activation_inputs(target: Target) -> list[ir.Value]:
    return [v for i, v in enumerate(target.node.inputs[:2])
            if i != target.weight and v is not None]


def _ready(target: Target, params: dict[ir.Value, quant_math.QuantParams]) -> bool:
    """Whether every computed input of the layer has quantization parameters."""
    return all(v in params for v in _activation_inputs(target) if constant_array(v) is None)



def _insert_qdq(
    value: ir.Value, p: quant_math.QuantParams, migration: Migration | None,
    keep_float: Collection[ir.Node], readers: Collection[ir.Node] | None,
) -> bool:
    """``value -> Q -> DQ`` right after its producer. Who reads the DQ output: the quantized
    layers ``readers`` when given, so that a float consumer of a layer's input (a residual
    Add beside the MatMul reading a LayerNorm output) keeps the exact value; every consumer
    but the float layers when ``readers`` is None, for a layer's quantized output (ONNX
    Runtime fuses ``Conv -> Q`` only when the Q is the Conv's sole reader). Graph outputs
    keep the float value. False, with nothing inserted, when no consumer would read it."""
    uses = [(use.node, use.idx) for use in value.uses() if use.node not in keep_float
            and (readers is None or use.node in readers)]
    if not uses:
        return False
    if migration is not None and len(uses) == len(list(value.uses())) and fold_into_norm(
            value, migration):
        migration = None  # the LayerNorm now yields value / factors itself
    # in the graph that defines the value: an If branch may read it from around it
    producer = value.producer()
    graph = producer.graph if producer is not None else value.graph
    assert graph is not None
    builder = Builder(graph)
    restored = qdq(builder, value, p, migration)
    builder.insert_after(value.producer())
    for consumer, index in uses:
        consumer.replace_input_with(index, restored)
    return True


def _both(first: Any, second: Any) -> Any:
    """One feed callback that gives each batch to two."""
    def feed(x: np.ndarray) -> None:
        first(x)
        second(x)
    return feed
