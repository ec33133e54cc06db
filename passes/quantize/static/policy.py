"""Which tensors ``quantize`` puts Q/DQ on: a policy, not "everything".

Compute ops (Conv, MatMul, Gemm, com.microsoft.Attention by default) get their weight stored
as int8 + DequantizeLinear (per output channel) and their activation inputs wrapped in
QuantizeLinear -> DequantizeLinear;
a Conv's output too, after a following Relu/Clip when it has one, because ONNX Runtime only
fuses ``DQ -> Conv -> Q`` into an integer convolution when the output is quantized, while
``DQ -> MatMul`` without an output Q already runs as an integer MatMul.
A residual Add joins when both its inputs are quantized already (ResNet, MobileNetV2): its
output is quantized after its Relu, and ``lower-qdq`` runs it as QLinearAdd (ResNet-50 on
ONNX Runtime CPU: 17.0 -> 13.3 ms at batch 1, as fast as ORT's own QOperator output).

Never quantized, each with a note:
- mask, position and index paths: tensors computed only from integer inputs and constants
  (an attention mask turned into an additive float bias, position ids, shapes). A tensor is
  "data" when it derives from a float graph input, from an embedding lookup (Gather from a
  float constant table), or from an integer input that reaches a layer's input only through
  moves, casts and arithmetic with constants (image bytes -> Cast -> Div by 255 -> Conv);
  everything else is such a path. ONNX Runtime's quantizer wrecks
  MiniLM by quantizing exactly this (a mask of -3.4e38 gives a scale of 1e36);
- graph outputs (kept exact for the caller);
- tensors whose rank or dtype the op does not allow (only float32 is quantized).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.branches import branches
from onnxpress.ir.edit import MS_DOMAIN, describe
from onnxpress.ir.layers import layer_bias, linear_layer, weight_source
from onnxpress.ir.marks import kept_float
from onnxpress.passes.quantize.static.cost import unprofitable

FLOAT = ir.DataType.FLOAT
#: compute ops outside the default domain that ``quantize`` knows
_DOMAINS = {"Attention": MS_DOMAIN}
#: ops quantized only when every input already is (``_joining``)
_JOINING = ("Add",)
#: how the notes of layers the cost rule kept in float begin
_COST_RULE = "int8 cost rule: "
#: ops whose output is quantized after them rather than before their consumer
_FUSED_ACTIVATIONS = ("Relu", "Clip")


@dataclasses.dataclass
class Target:
    """A compute node to quantize: its constant weight's input index and output-channel
    axis, its constant 1-D bias's input index (int32 bias when its input is quantized), and
    the activations it wants quantized (its inputs, and its output when that is quantized
    too) — what keeping it in float takes back."""

    node: ir.Node
    weight: int | None = None
    axis: int | None = None
    bias: int | None = None
    activations: list[ir.Value] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Plan:
    targets: list[Target]
    activations: list[ir.Value]  # each gets one Q -> DQ pair shared by all its consumers
    notes: list[str]
    kept_float: int = 0  # layers the cost rule kept in float (each rule's note says why)


def plan(
    graph: ir.Graph,
    *,
    ops: Iterable[str],
    quantize_outputs: Iterable[str] = ("Conv",),
    activation_matmul: bool = True,
    exclude: Iterable[str] = (),
    grouped: bool = True,
    cost: bool = False,
    min_rows: int = 0,
    outer_data: set[ir.Value] | None = None,
) -> Plan:
    """``graph`` may be an If branch: ``outer_data`` is then what counts as data in the
    graphs around it (a branch reads their values)."""
    ops, quantize_outputs, exclude = set(ops), set(quantize_outputs), set(exclude)
    data = data_values(graph, outer_data)
    outputs = set(graph.outputs)
    targets: list[Target] = []
    chosen: dict[ir.Value, None] = {}  # insertion-ordered set
    notes: list[str] = []
    marked = 0  # nodes another pass marked to stay in float
    costly = {"conv": 0, "grouped": 0, "rows": 0}  # layers kept float by the cost rule
    fused: dict[ir.Node, ir.Node] = {}  # a Conv -> the Relu whose output is quantized

    def want(value: ir.Value | None, node: ir.Node) -> bool:
        if value is None or value.dtype != FLOAT:
            return False
        if value not in data:
            source = weight_source(value)
            notes.append(f"{describe(node)}: input {value.name!r} is " + (
                f"a Transpose of the constant {source.value.name!r}, which other nodes read "
                "too (not a tied LM head's table); left in float" if source is not None
                else "a mask, position or index path; left in float"))
            return False
        if value in outputs:
            return False
        return True

    for node in graph:
        if node.op_type not in ops or node.domain != _DOMAINS.get(node.op_type, "") \
                or node.name in exclude:
            continue
        if kept_float(node) is not None:
            marked += 1
            continue
        layer = linear_layer(node)
        if not grouped and node.op_type == "Conv" and layer is not None and layer.groups > 1:
            costly["grouped"] += 1
            continue
        if node.op_type in _JOINING:
            target = _joining(node, chosen, outputs)
            if target is not None:
                targets.append(target)
                chosen.update(dict.fromkeys(target.activations))
            continue
        target = _target(node)
        if target is None:
            notes.append(f"{describe(node)}: no supported weight/input layout; "
                         "left in float")
            continue
        if target.weight is not None and node.op_type in ("MatMul", "Gemm") \
                and _rows_per_sample(node) < min_rows:
            costly["rows"] += 1
            continue
        activations = [i for i, v in enumerate(node.inputs[:2]) if i != target.weight
                       and v is not None and constant_array(v) is None]
        if target.weight is None and not activation_matmul:
            continue
        wanted = [node.inputs[i] for i in activations if want(node.inputs[i], node)]
        if len(wanted) != len(activations):
            continue  # an integer kernel needs every non-weight input quantized
        if node.op_type in quantize_outputs:
            out = _fused_output(node.outputs[0])
            if out.dtype == FLOAT and out not in outputs:
                wanted.append(out)
                if out.producer() is not node:
                    fused[node] = out.producer()
        target.activations = wanted
        targets.append(target)
        chosen.update(dict.fromkeys(wanted))
    if cost:
        targets, regions = _paying(targets, fused, costly)
        chosen = dict.fromkeys(v for t in targets for v in t.activations)
    notes.extend(_cost_notes(costly, min_rows, regions if cost else 0))
    if marked:
        notes.append(f"{marked} nodes marked by an earlier pass (e.g. tome's similarity "
                     "scores, which choose the tokens to merge) left in float")
    return Plan(targets, list(chosen), notes, sum(costly.values()))


def _joining(node: ir.Node, chosen: dict[ir.Value, None], outputs: set[ir.Value],
             ) -> Target | None:
    """A residual Add whose inputs are both quantized already (Conv outputs, or the previous
    block's Add output): its output is quantized too, after a fused Relu, so the integer
    kernel (QLinearAdd) takes the place of a DQ, DQ, Add, Relu, Q chain. An Add with a float
    input (a transformer's residual stream) stays float: quantizing it adds error and buys
    no integer kernel."""
    inputs = node.inputs
    if len(inputs) != 2 or any(v is None or v not in chosen for v in inputs):
        return None
    out = _fused_output(node.outputs[0])
    if out.dtype != FLOAT or out in outputs:
        return None
    return Target(node, activations=[*inputs, out])


def _target(node: ir.Node) -> Target | None:
    inputs = node.inputs
    layer = linear_layer(node)
    if node.op_type == "Conv":
        if len(inputs) < 2 or constant_array(inputs[1]) is None:
            return Target(node)  # a computed weight: quantized like an activation
        return Target(node, weight=1, axis=0, bias=_bias_index(node))
    if node.op_type == "Gemm":
        if layer is None or layer.trans_a or len(inputs) < 2 or constant_array(inputs[1]) is None:
            return None
        return Target(node, weight=1, axis=layer.out_axis, bias=_bias_index(node))
    if node.op_type == "Attention":
        # packed [hidden, 3 * hidden] Q/K/V weight, one scale per column; the bias stays
        # float (QAttention adds it in float)
        weight = constant_array(inputs[1]) if len(inputs) > 1 else None
        if weight is None or weight.ndim != 2:
            return None
        return Target(node, weight=1, axis=1)
    if node.op_type == "MatMul":
        weight = constant_array(inputs[1])
        if weight is None:
            return Target(node)  # activation x activation (attention)
        if weight.ndim != 2:
            return None
        return Target(node, weight=1, axis=1)
    return None


def _paying(targets: list[Target], fused: dict[ir.Node, ir.Node], costly: dict[str, int]
            ) -> tuple[list[Target], int]:
    """``targets`` without the Conv regions int8 does not pay for (``cost``), and how many
    regions went; their Convs are counted in ``costly``."""
    regions = unprofitable(targets, fused)
    gone = {i for region in regions for i in region}
    costly["conv"] += sum(1 for i in gone if targets[i].node.op_type == "Conv")
    return [t for i, t in enumerate(targets) if i not in gone], len(regions)


def _rows_per_sample(node: ir.Node) -> float:
    """How many rows of its input one sample gives a MatMul or Gemm: the static axes between
    the first (the sample axis) and the last; a symbolic one (a sequence) counts as many."""
    if node.op_type == "Gemm":
        return 1
    shape = node.inputs[0].shape
    if shape is None:
        return math.inf
    rows = 1
    for dim in list(shape)[1:-1]:
        if not isinstance(dim, int) or dim <= 0:  # symbolic, or an exporter's -1
            return math.inf
        rows *= dim
    return rows


def _cost_notes(costly: dict[str, int], min_rows: int, regions: int) -> list[str]:
    """What the cost rule kept in float and why: ONNX Runtime 1.32 on a 2-core Xeon (AVX-512
    VNNI, AMX), single layers at batch 1, int8 against fp32 (``benchmarks/suites/
    int8_cost.py`` measures them again)."""
    notes = []
    if costly["conv"]:
        notes.append(f"{_COST_RULE}{costly['conv']} Conv in {regions} groups left in float: "
                     "each group's estimated int8 saving is smaller than the cost of the "
                     "Q/DQ at its edges (cost.py: on a 2-core Xeon with AMX a lone int8 "
                     "Conv between float ops ran 0.73x-1.82x fp32, small ones slowest, "
                     "each further Conv of a chain 1.5x-8.7x); quantize(cost=false) "
                     "quantizes them")
    if costly["grouped"]:
        notes.append(f"{_COST_RULE}{costly['grouped']} grouped/depthwise Conv left in "
                     "float (ONNX Runtime's int8 kernels for them ran 0.4x-0.5x fp32 on a "
                     "2-core Xeon with VNNI); quantize(grouped=true) quantizes them")
    if costly["rows"]:
        notes.append(f"{_COST_RULE}{costly['rows']} MatMul/Gemm with under {min_rows} "
                     "rows per sample left in float (at batch 1 ONNX Runtime's int8 "
                     "MatMul ran 0.8x-0.9x fp32 on one row, 1.1x on 16, 2.2x-3.4x on 128: "
                     "quantizing the input costs more than a vector product saves); "
                     "quantize(min_rows=0) quantizes them")
    return notes


def _bias_index(node: ir.Node) -> int | None:
    site = layer_bias(node)
    return site[1] if site is not None else None


def _fused_output(value: ir.Value) -> ir.Value:
    """The Relu/Clip output when ``value``'s only consumer is one (ORT fuses it into the
    integer Conv when the Q comes after it)."""
    uses = list(value.uses())
    if len(uses) == 1:
        consumer = uses[0].node
        if consumer.op_type in _FUSED_ACTIVATIONS and consumer.domain == "":
            return consumer.outputs[0]
    return value


def plan_model(model: ir.Model, **options) -> Plan:
    """``plan`` over the main graph and every If branch (nested too), a branch's data
    being what is data around it. Loop and Scan bodies are not planned: their values change
    from one iteration to the next, and calibration observes one value per run."""
    parts = [plan(model.graph, **options)]

    def visit(graph: ir.Graph, outer: set[ir.Value]) -> None:
        for node in graph:
            if node.op_type != "If":
                continue
            for body in branches(node):
                parts.append(plan(body, outer_data=outer, **options))
                visit(body, data_values(body, outer))

    visit(model.graph, data_values(model.graph))
    return Plan([t for p in parts for t in p.targets],
                list(dict.fromkeys(v for p in parts for v in p.activations)),
                [n for p in parts for n in p.notes], sum(p.kept_float for p in parts))


def data_values(graph: ir.Graph, outer: set[ir.Value] | None = None) -> set[ir.Value]:
    """Values that derive from a float graph input, an embedding lookup, or integer data a
    layer reads (see module doc); ``outer``: the data of the graphs around an If branch."""
    data = {v for v in graph.inputs if v.dtype is not None and v.dtype.is_floating_point()}
    data |= outer or set()
    for value in graph.inputs:
        if value.dtype is not None and not value.dtype.is_floating_point():
            data.update(_read_as_data(value))
    for node in graph:
        fed = any(v in data for v in node.inputs if v is not None)
        lookup = (node.op_type == "Gather" and node.inputs and constant_array(node.inputs[0])
                  is not None and node.inputs[0].dtype == FLOAT)
        if fed or lookup:
            data.update(node.outputs)
    return data


def _read_as_data(value: ir.Value) -> set[ir.Value]:
    """The values from integer input ``value`` to a layer's activation input, when it gets
    there only through moves, casts and arithmetic with constants (bytes -> Cast -> Div by
    255 -> Transpose -> Conv): then it is the network's data, not an index or mask path. A
    mask stops at the Add that puts it on the scores, a position id at its lookup."""
    chain: dict[ir.Value, ir.Value | None] = {value: None}  # value -> the one before it
    pending = [value]
    while pending:
        current = pending.pop()
        for use in current.uses():
            node = use.node
            if _reads_as_layer_input(node, use.idx):
                found, step = set(), current
                while step is not None:  # its float part: the integer values stay indices
                    if step.dtype is not None and step.dtype.is_floating_point():
                        found.add(step)
                    step = chain[step]
                return found
            if not _passes_data_on(node, use.idx) or not node.outputs:
                continue
            out = node.outputs[0]
            if out not in chain:
                chain[out] = current
                pending.append(out)
    return set()


#: ops that move, reshape or convert a tensor read as their first input; Equal and OneHot
#: one-hot encode it (Magika's bytes -> Equal(range) -> Cast -> MatMul: an embedding)
_MOVES = ("Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
          "Slice", "Gather", "Expand", "Pad", "Resize", "Equal", "OneHot")
#: elementwise ops that normalise data when their other operand is a constant
_SCALES = ("Sub", "Div", "Mul", "Add")


def _passes_data_on(node: ir.Node, index: int) -> bool:
    if node.op_type in _MOVES:
        return index == 0
    if node.op_type in _SCALES:
        others = [v for i, v in enumerate(node.inputs) if i != index]
        return all(constant_array(v) is not None for v in others)
    return False


def _reads_as_layer_input(node: ir.Node, index: int) -> bool:
    return linear_layer(node) is not None and (index == 0 or node.op_type == "MatMul")
