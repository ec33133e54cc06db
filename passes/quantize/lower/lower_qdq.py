"""``lower-qdq``: QDQ-form quantized graphs -> ONNX integer operators, for runtimes that do
not fuse QuantizeLinear (Q) / DequantizeLinear (DQ) themselves. Rewrites (the planners are
in :mod:`.rules`):

- ``DQ(x), DQ(w) [, DQ(b)] -> Conv -> Q``   -> ``QLinearConv``
- ``DQ(a), DQ(b) -> MatMul -> Q``           -> ``QLinearMatMul`` (B per tensor, or a
  constant [K, N] weight per column: the spec's per-column form, which ONNX Runtime runs)
- ``DQ(a), DQ(b) -> MatMul`` (float result) -> ``com.microsoft.MatMulIntegerToFloat``
  (absorbing a following ``Add`` of a constant [N] bias), or without contrib ops
  ``MatMulInteger -> Cast -> Mul(s_a * s_b)``
- ``DQ(a), DQ(w) [, C] -> Gemm [-> Q]``      -> ``com.microsoft.QGemm`` (int32 C, quantized
  or float result), or without contrib ops ``MatMulInteger`` on the transposed weight,
  ``Cast``, ``Mul(alpha * s_a * s_w)``, ``Add(beta * C)``, any Q staying after it
- ``DQ(a), DQ(b) -> Add|Mul -> Q``          -> ``com.microsoft.QLinearAdd|QLinearMul``
- ``DQ(x) -> GlobalAveragePool -> Q``       -> ``com.microsoft.QLinearGlobalAveragePool``
- ``DQ(x1), DQ(x2), ... -> Concat -> Q``    -> ``com.microsoft.QLinearConcat``
- ``DQ(x), DQ(W) -> com.microsoft.Attention`` -> ``com.microsoft.QAttention`` (contrib only;
  :mod:`.attention`, float rounding only)
- ``op -> Reshape|Flatten|Transpose|Squeeze|Unsqueeze|MaxPool -> Q`` after a lowered op:
  the data-movement ops run on its integer output; ``op -> Relu|Clip -> Q`` (what
  ``fold-qdq`` cannot absorb, e.g. symmetric int8) becomes an integer ``Clip(q, Q(lo),
  Q(hi))`` (opset >= 12). Both exact: Q is elementwise and non-decreasing. Before
  lowering, ``fold-qdq`` runs (``fold=true``): weights become int8 initializers and
  ``Q(op(DQ(q)))`` with data-movement ops becomes ``op(q)``.

Exactness, measured against ONNX Runtime on the QDQ model with graph optimisations off
(the QDQ arithmetic as written: DQ in float, the float op, Q rounding half to even), each
lowered op fed the same integers (``tests/passes/quantize/test_lower_qdq.py``):

- quantized results (QLinearConv, QLinearMatMul, QGemm with Q, QLinearAdd/Mul/
  GlobalAveragePool/Concat): within one quantization step. The integer kernels accumulate
  exactly and requantize with one float multiplier (``s_x * s_w / s_y``), the QDQ form sums
  rounded float products and divides by ``s_y``: near a rounding boundary the two pick
  neighbouring levels. Measured: QLinearConv ~1e-6 of the elements (none in isolation on
  64 digits), QLinearMatMul ~2e-6, QLinearMul 1e-3 on random data, the others none.
  Against ONNX Runtime's own QDQ fusion (its default), which builds the same kernels:
  bit-identical (the digits models, int8 and uint8 activations, and the elementwise ops).
- float results (MatMulIntegerToFloat, MatMulInteger + Mul, QGemm without Q): float
  rounding only (the integer sum is exact, then one multiply by the scale product),
  below 1e-6 of the output's largest magnitude.
- a float Conv/Gemm bias (not an int32 DQ at scale ``s_x * s_w``) is rounded onto that
  grid: off by at most half of ``alpha * s_x * s_w``.

Left in QDQ form, each named in the notes with the reason: an op of a lowered type that
reads a DQ but does not match (per-axis activations, non-constant or non-8-bit weights,
a Conv or an elementwise op whose output is not quantized, contrib ops with
``contrib=false``), and any other op sandwiched between DQ and Q. Subgraphs (If/Loop
bodies) are left untouched.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import opset_version
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import describe, remove_unread
from onnxpress.ir.qdq import is_op
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.quantize.fold.fold_qdq import FoldQdq
from onnxpress.passes.quantize.lower.attention import lower_attention
from onnxpress.passes.quantize.lower.choice import AUTO_NOTE, lower_measured
from onnxpress.passes.quantize.lower.rules import (
    MS_DOMAIN,
    QUANTIZED_MOVES,
    RULES,
    Context,
    Lowering,
    Quantized,
    integer_clip,
    requantized,
)

__all__ = ["LowerQdq"]

logger = logging.getLogger(__name__)

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_WEIGHTED = ("Conv", "MatMul", "Gemm")


@dataclasses.dataclass(frozen=True)
class LowerQdq(Pass):
    name = "lower-qdq"

    contrib: bool = True  # com.microsoft ops (ONNX Runtime); false: standard ONNX only
    fold: bool = True  # run fold-qdq first
    ops: tuple[str, ...] = ("Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool",
                            "Concat", "Attention")  # ops to lower
    # auto: the integer operators wherever they apply, a rule (.choice: they ran as fast as
    # or faster than the QDQ form on every model measured); measure: time both on this
    # machine and keep the faster (machine-dependent bytes, the report says so)
    form: Literal["qoperator", "auto", "measure"] = "qoperator"
    data: Any = data_field()  # the inputs form=measure times on

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.ops) - set(RULES) - {"Attention"}
        if unknown:
            raise BadInputError(f"lower-qdq(ops=...): cannot lower {', '.join(sorted(unknown))}; "
                                f"choose from {', '.join([*RULES, 'Attention'])}")

    def call(self, model: ir.Model) -> PassStats:
        if self.form == "measure":
            return lower_measured(model, self._lower, self.data)
        result = self._lower(model)
        if self.form == "auto":
            result.notes.append(AUTO_NOTE)
            result.stats["form"] = "qoperator" if result.modified else "qdq"
        return result

    def _lower(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False, stats={})
        opset = opset_version(model) or 0
        if opset < 10:
            result.notes.append("lower-qdq: opset < 10 has no integer ops; nothing lowered")
            return result
        # int8 pairs move too: the integer ops replace the fusion ORT would do in place
        folded = (FoldQdq(int8_moves=True)(model) if self.fold
                  else PassStats(model, modified=False))
        result.modified = folded.modified
        ctx = Context(opset=opset, contrib=self.contrib)
        wanted = set(self.ops)
        graph, kept = model.graph, []
        for node in list(graph):
            if node.graph is None or node.domain not in ("", "ai.onnx"):
                continue  # removed by an earlier lowering, or not a standard op
            plan = RULES[node.op_type](node, ctx) if node.op_type in wanted else None
            if isinstance(plan, Lowering):
                _apply(graph, plan)
                result.stats[plan.becomes] = result.stats.get(plan.becomes, 0) + 1
            elif _quantized_op(node, ctx):
                reason = plan or f"no integer lowering for {node.op_type}"
                kept.append(f"{describe(node)} kept in QDQ form: {reason}")
        if "Attention" in wanted and self.contrib:
            lowered, notes = lower_attention(graph)
            if lowered:
                result.stats["QAttention"] = lowered
            kept.extend(notes)
        # fold-qdq's notes on nodes that lowering then removed no longer hold
        result.notes = [note for note in folded.notes
                        if any(note.startswith(f"{n.op_type} {n.name!r} ") for n in graph)]
        result.notes.extend(kept)
        if any(n.domain == MS_DOMAIN for n in graph):
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        result.modified = result.modified or bool(result.stats)
        result.stats["kept"] = len(kept)
        logger.debug("lower-qdq: %s", result.stats)
        return result



def _quantized_op(node: ir.Node, ctx: Context) -> bool:
    """A node ``quantize`` meant to run in integers: a Conv/MatMul/Gemm reading a DQ, or any
    op between DQ and Q but Q/DQ and data movement (fold-qdq moves those onto integers)."""
    if not any(v is not None and is_op(v.producer(), "DequantizeLinear") for v in node.inputs):
        return False
    if node.op_type in _WEIGHTED:
        return True
    if node.op_type in _QDQ or node.op_type in QUANTIZED_MOVES or not node.outputs:
        return False
    return requantized(node, ctx) is not None


def _apply(graph: ir.Graph, plan: Lowering) -> None:
    """Place the integer nodes before the first replaced node, route the result, and remove
    what nothing reads any more (replaced nodes, the absorbed Q, unused DQs, constants)."""
    builder = Builder(graph)
    result = plan.build(builder)
    builder.insert_before(plan.replaced[0])
    last = plan.replaced[-1].outputs[0]
    inputs = [v for n in plan.replaced for v in n.inputs]
    if plan.output is None:
        result.type, result.shape = last.type, last.shape
        _route(last, result)
    else:
        q = plan.output.q
        result.type = ir.TensorType(q.params.qtype)
        result.shape = (plan.output.moves[0].inputs[0] if plan.output.moves else q.value).shape
        for move in plan.output.moves:
            inputs.extend(move.inputs[1:])  # a Clip's bounds, once it is replaced
            result = _move_onto_integers(graph, move, result, q)
        inputs.extend(q.node.inputs)
        _route(q.value, result)
        graph.remove(q.node, safe=True)
    graph.remove([n for n in plan.replaced if n.graph is not None], safe=True)
    remove_unread(inputs, producers=("DequantizeLinear", "Constant"))


def _move_onto_integers(graph: ir.Graph, move: ir.Node, source: ir.Value,
                        q: Quantized) -> ir.Value:
    """``move`` reads ``source`` (integers) instead of its float input; a Relu/Clip becomes
    an integer Clip. Returns its new output, named ``<old name>_quantized``."""
    old = move.outputs[0]
    if move.op_type in ("Relu", "Clip"):
        builder = Builder(graph)
        out = integer_clip(builder, move, source, q)
        builder.insert_before(move)
        old.replace_all_uses_with(out)
        graph.remove(move, safe=True)
    else:
        move.replace_input_with(0, source)
        out = old
    out.type, out.shape = ir.TensorType(q.params.qtype), old.shape
    out.name = f"{old.name}_quantized"
    return out


def _route(old: ir.Value, new: ir.Value) -> None:
    """Every reader of ``old`` (graph outputs included) reads ``new``, which takes the name."""
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = None
    new.name = name
