"""``fold-qdq``: tidy a model that arrives with QuantizeLinear (Q) / DequantizeLinear (DQ)
nodes (ONNX Runtime's static QDQ output, PyTorch fake-quant exports, ModelOpt-style
models, ours). Rewrites, each bit-exact unless marked:

- ``Q(x, Identity(s), Identity(zp))`` -> ``Q(x, s, zp)`` (likewise DQ, and a weight
  ``Q(Identity(W))``) when the Identity chain ends in a constant: the TorchScript exporter
  shares equal initializers through Identity nodes, which hid them from every rule below
  (exact: Identity copies).
- a one-element scale or zero point of shape ``[1]`` (any rank) of a non-blocked Q/DQ -> a
  0-d copy: TorchScript writes ``[1]``, which ONNX Runtime reads as per tensor but then fuses
  ``DQ -> Add -> Q`` into a QLinearAdd that rejects it, so the model does not load at its
  default optimisation level (exact: the same value, read the same way).
- ``DQ(Q(W, s, zp))``, W constant  -> ``DQ(Wq)``, Wq an int8/uint8/int16/uint16
  initializer: the file stores 1 byte per weight instead of 4. Wq is what the runtime's Q
  computes (``ir.quant_math.quantize``: x / s in float32, round half to even, saturate;
  per tensor, per axis, or blocked), so the DQ sees the same integers (exact).
  ``DQ(Clip(Q(W), lo, hi))`` -> ``DQ(clip(Wq, lo, hi))`` for constant integer bounds: what
  PyTorch exports for a fake-quant range narrower than the type, (0, 127) (exact: integer
  clamping).
- ``Q(DQ(q, s, zp), s, zp)`` -> ``q``; ``Q(op(DQ(q)))`` -> ``op(q)`` for data-movement ops;
  ``Shape(DQ(q))`` -> ``Shape(q)``; ``Q(Relu(x))`` / ``Q(Clip(x))`` -> ``Q(x)`` when Q
  saturates what they cut: onnxscript pattern rules, exact, with the argument in
  :mod:`.rules`. Run to a fixed point.
  Int8 (signed) pairs around data-movement ops stay where they are unless
  ``int8_moves=true``: ONNX Runtime on x86 turns int8 activations into uint8 only where a Q
  feeds its DQ directly (QDQS8ToU8Transformer); after ``Q -> op -> DQ`` the MatMul or Conv
  reading them is not fused (so ORT's optimised outputs differ, by a quantization step, and
  it runs slower), and a MaxPool runs on ORT's integer kernel instead of its (10x faster)
  float one. Uint8 pairs always move; ORT's ``quantize_static`` gives int8 by default. The
  ``tensorrt`` preset leaves int8 pairs in place too: TensorRT reads Q/DQ only as adjacent
  pairs and moves them across such ops itself.
- Lossy, off by default (``drop_unfusable=true``): ``DQ(Q(x))`` -> ``x`` (equal parameters)
  when neither the producer of x nor any consumer of the DQ is an op ONNX Runtime may run
  on quantized data (``ORT_QDQ_OPS``, a generous list): the pair is then only a simulated
  rounding that costs two kernels. Removing it removes that rounding (up to half a step)
  and the clamp to the quantized range, so outputs change. Types must be known (shape
  inference), else the pair stays.

Left alone, with the node and reason in the notes: a requantization ``Q2(DQ1(q))`` with
other parameters (it rounds), per-axis parameters through an op that moves the axis, float8
or int4 weights, non-float32 weights or scales, scales or zero points that are not
constant, a Q whose output is a graph output. Left alone silently: an integer Clip between
an activation's Q and DQ (PyTorch's (0, 127) range; it clamps, and ORT runs it on uint8).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import all_graphs, constant_array, is_constant
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import describe, remove_unread
from onnxpress.ir.qdq import QdqParams, is_op, read
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.quantize.fold.rules import RuleLog, absorb_rules, move_rules, pair_rules

__all__ = ["ORT_QDQ_OPS", "FoldQdq"]

logger = logging.getLogger(__name__)

#: ops that ONNX Runtime's QDQ fusions (CPU) can run on quantized inputs or outputs
ORT_QDQ_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "Where",
    "AveragePool", "GlobalAveragePool", "MaxPool", "LeakyRelu", "Sigmoid", "Softmax",
    "Relu", "Clip", "Resize", "Pad", "Split", "Gather", "GatherElements", "Reshape",
    "Expand", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Tile",
    "DepthToSpace", "SpaceToDepth", "ArgMax", "ArgMin", "InstanceNormalization",
    "LayerNormalization", "QuantizeLinear", "DequantizeLinear",
})
_FOLDED_TYPES = (ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT16, ir.DataType.UINT16)
_NOT_CONSTANT = "its input is not constant"
_MAX_ROUNDS = 16
#: ONNX Runtime's row-blocked QuantizeLinear (block axis not last) gives 0 instead of
#: saturating when |x / s| >= 2**31 or x is infinite; such weights are left to the runtime
_INT32_LIMIT = 2.0**31
_BLOCKED_OVERFLOW = ("|w / s| reaches 2**31 in a blocked weight, where runtimes disagree "
                     "with the spec's saturation")


@dataclasses.dataclass(frozen=True)
class FoldQdq(Pass):
    name = "fold-qdq"
    visits_subgraphs = True

    drop_unfusable: bool = False  # lossy: remove Q->DQ pairs no ORT kernel can fuse
    int8_moves: bool = False  # also move int8 pairs (module doc: ORT on x86 fuses them in place)

    def call(self, model: ir.Model) -> PassStats:
        stats = {"identities_bypassed": 0, "scalars_made": 0, "weights_folded": 0,
                 "clips_folded": 0, "redundant_pairs": 0, "moved_through": 0,
                 "activations_absorbed": 0, "dropped_lossy": 0, "kept": 0}
        result = PassStats(model, modified=False, stats=stats)
        stats["identities_bypassed"] = _bypass_identities(model)
        stats["scalars_made"] = _scalar_parameters(model)
        constants = _qdq_constants(model)
        kept: dict[ir.Node, str] = {}
        stats["weights_folded"], stats["clips_folded"] = self._fold_weights(model, kept)
        log = RuleLog()
        rule_sets = {"activations_absorbed": absorb_rules(log),
                     "moved_through": move_rules(log, int8_moves=self.int8_moves),
                     "redundant_pairs": pair_rules(log)}
        for _ in range(_MAX_ROUNDS):
            applied = 0
            for key, rules in rule_sets.items():
                count = rules.apply_to_model(model)
                stats[key] += count
                applied += count
                _remove_identities(log)
                _sweep(log.maybe_dead)
                remove_unread(log.maybe_unused)
                log.maybe_unused.clear()
            if not applied:
                break
        if self.drop_unfusable:
            stats["dropped_lossy"] = _drop_unfusable(model)
        remove_unread(constants)
        kept.update(log.kept)
        result.notes.extend(_notes(kept))
        stats["kept"] = len(result.notes)
        result.modified = any(v for k, v in stats.items() if k != "kept")
        logger.debug("fold-qdq: %s", stats)
        return result

    def _fold_weights(self, model: ir.Model, kept: dict[ir.Node, str]) -> tuple[int, int]:
        """Weights folded, and integer Clips folded into them."""
        folded = clips = 0
        for graph in list(all_graphs(model)):
            for node in [n for n in graph if is_op(n, "QuantizeLinear")]:
                reason = _fold_weight(graph, node)
                if isinstance(reason, int):
                    folded += 1
                    clips += reason
                elif reason != _NOT_CONSTANT:
                    kept[node] = f"weight not folded: {reason}"
        return folded, clips


def _bypass_identities(model: ir.Model) -> int:
    """Feed every Q/DQ input that is an Identity chain over a constant from the constant."""
    bypassed = 0
    for node in _qdq_nodes(model):
        for index, value in enumerate(node.inputs):
            chain = _identity_chain(value)
            if chain and is_constant(chain[0].inputs[0]):
                node.replace_input_with(index, chain[0].inputs[0])
                _sweep(chain)  # pops the last first: the Identity this node read
                bypassed += 1
    return bypassed


def _scalar_parameters(model: ir.Model) -> int:
    """Give every per-tensor Q/DQ with a ``[1]`` scale or zero point 0-d copies of them."""
    copies: dict[tuple[int, int], ir.Value] = {}
    replaced: list[ir.Value | None] = []
    for node in _qdq_nodes(model):
        params = list(node.inputs[1:3])
        arrays = [constant_array(v) for v in params if v is not None]
        if (node.graph is None or node.attributes.get_int("block_size", 0) or not arrays
                or any(a is None or a.size != 1 for a in arrays)):
            continue
        for index, (value, array) in enumerate(zip(params, arrays), start=1):
            if array.ndim == 0:
                continue
            key = (id(value), id(node.graph))
            if key not in copies:
                name = f"{value.name or node.name}_scalar"
                copies[key] = Builder(node.graph).initializer(array.reshape(()), name)
            node.replace_input_with(index, copies[key])
            replaced.append(value)
    remove_unread(replaced)
    return len(replaced)


def _qdq_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph.all_nodes()
            if is_op(n, "QuantizeLinear") or is_op(n, "DequantizeLinear")]


def _identity_chain(value: ir.Value | None) -> list[ir.Node]:
    """The Identity nodes that ``value`` copies, the first one reading the source."""
    chain: list[ir.Node] = []
    while value is not None and is_op(value.producer(), "Identity"):
        chain.insert(0, value.producer())
        value = chain[0].inputs[0]
    return chain


def _fold_weight(graph: ir.Graph, q: ir.Node) -> str | int:
    """Replace a Q of a constant by the quantized constant: the number of integer Clips
    folded into it when done, else why not."""
    weight = constant_array(q.inputs[0])
    if weight is None:
        return _NOT_CONSTANT
    params = read(q)
    if isinstance(params, str):
        return params
    if q.outputs[0].is_graph_output():
        return "its output is a graph output"
    if weight.dtype != np.float32 or params.scale.dtype != np.float32:
        return f"{weight.dtype} weights with {params.scale.dtype} scales are not folded"
    if params.qtype not in _FOLDED_TYPES:
        return f"{params.qtype.name} weights are not folded"
    if np.isnan(weight).any():
        return "the weight contains NaN (its quantized value is unspecified)"
    quantized = _quantize(weight, params)
    if isinstance(quantized, str):
        return quantized
    source = q.inputs[0]
    name = f"{source.name or q.name}_quantized"
    value = Builder(graph).initializer(quantized, name)
    q.outputs[0].replace_all_uses_with(value)
    graph.remove(q, safe=True)
    remove_unread([source])
    return sum(_fold_clip(graph, use.node, quantized, name) for use in value.uses())


def _fold_clip(graph: ir.Graph, clip: ir.Node, quantized: np.ndarray, name: str) -> int:
    """``Clip(Wq, lo, hi)`` -> ``clip(Wq, lo, hi)`` for constant bounds; 1 when folded."""
    if (not is_op(clip, "Clip") or clip.graph is not graph or clip.outputs[0].is_graph_output()
            or "min" in clip.attributes or "max" in clip.attributes):
        return 0
    info = np.iinfo(quantized.dtype)
    inputs = list(clip.inputs) + [None] * (3 - len(clip.inputs))
    bounds = []
    for value, default in zip(inputs[1:], (info.min, info.max)):
        array = default if value is None else constant_array(value)
        if array is None or np.size(array) != 1 or np.asarray(array).dtype.kind not in "iu":
            return 0
        bounds.append(int(np.asarray(array).reshape(())))
    if bounds[0] > bounds[1]:
        return 0  # an empty range: runtimes differ
    clipped = np.clip(quantized, bounds[0], bounds[1]).astype(quantized.dtype)
    value = Builder(graph).initializer(clipped, f"{name}_clipped")
    clip.outputs[0].replace_all_uses_with(value)
    graph.remove(clip, safe=True)
    remove_unread(inputs)
    return 1


def _quantize(weight: np.ndarray, params: QdqParams) -> np.ndarray | str:
    dtype = params.qtype.numpy()
    zero = params.zero_point.astype(dtype)
    if params.block_size:
        axis, block = params.axis, params.block_size
        if axis is None or params.scale.ndim != weight.ndim:
            return "blocked scale does not match the weight's rank"
        picks = np.arange(weight.shape[axis]) // block
        scale = np.take(params.scale, picks, axis=axis)
        zero = np.take(zero, picks, axis=axis)
        if scale.shape != weight.shape:
            return "blocked scale does not match the weight's shape"
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            if not np.all(np.abs(weight / scale) < _INT32_LIMIT):
                return _BLOCKED_OVERFLOW
        flat = quant_math.QuantParams(scale.reshape(-1), zero.reshape(-1), 0)
        return quant_math.quantize(weight.reshape(-1), flat).reshape(weight.shape)
    if params.axis is not None and (params.axis >= weight.ndim
                                    or params.scale.shape != (weight.shape[params.axis],)):
        return "per-axis scale does not match the weight's axis"
    return quant_math.quantize(weight, quant_math.QuantParams(params.scale, zero, params.axis))


def _qdq_constants(model: ir.Model) -> list[ir.Value]:
    """The constant inputs of every Q/DQ, to be dropped at the end if nothing reads them."""
    values: dict[int, ir.Value] = {}
    for node in _qdq_nodes(model):
        for value in node.inputs:
            if is_constant(value):
                values.setdefault(id(value), value)
    return list(values.values())




def _sweep(nodes: list[ir.Node]) -> None:
    """Remove those of ``nodes`` that lost every user, then constants only they read."""
    while nodes:
        node = nodes.pop()
        graph = node.graph
        if graph is None or any(o.uses() or o.is_graph_output() for o in node.outputs):
            continue
        inputs = list(node.inputs)
        graph.remove(node, safe=True)
        remove_unread(inputs)


def _remove_identities(log: RuleLog) -> None:
    """The Identity left for ``Q(DQ(q)) -> q``: its users read q directly, unless its output
    is a graph output (then it stays, to keep the output's name)."""
    while log.identities:
        node = log.identities.pop()
        graph, output = node.graph, node.outputs[0]
        if graph is None or output.is_graph_output():
            continue
        output.replace_all_uses_with(node.inputs[0])
        graph.remove(node, safe=True)


def _drop_unfusable(model: ir.Model) -> int:
    dropped = 0
    for graph in list(all_graphs(model)):
        for node in [n for n in graph if is_op(n, "QuantizeLinear")]:
            dropped += _drop_pair(graph, node)
    return dropped


def _drop_pair(graph: ir.Graph, q: ir.Node) -> int:
    """``DQ(Q(x))`` -> ``x`` when no fusable op sits on either side (lossy)."""
    x, out = q.inputs[0], q.outputs[0]
    dqs = [use.node for use in out.uses()]
    if x is None or out.is_graph_output() or not dqs:
        return 0
    params = read(q)
    for dq in dqs:
        if not is_op(dq, "DequantizeLinear") or dq.outputs[0].is_graph_output():
            return 0
        if x.dtype is None or dq.outputs[0].dtype != x.dtype:
            return 0  # unknown or different types: run shape inference first
        source = read(dq)
        if isinstance(params, str) or isinstance(source, str) or not params.same_as(source):
            return 0  # a DQ with other parameters rescales: not a simulated rounding
    producer = x.producer()
    consumers = [use.node for dq in dqs for use in dq.outputs[0].uses()]
    if any(n.op_type in ORT_QDQ_OPS for n in [producer, *consumers] if n is not None):
        return 0
    for dq in dqs:
        dq.outputs[0].replace_all_uses_with(x)
        dq.graph.remove(dq, safe=True)
    graph.remove(q, safe=True)
    return 1


def _notes(kept: dict[ir.Node, str]) -> list[str]:
    """One note per node still in the graph (a later rewrite may have removed it)."""
    return [f"{describe(node)} kept: {reason}"
            for node, reason in kept.items() if node.graph is not None]
