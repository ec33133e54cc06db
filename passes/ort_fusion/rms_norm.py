"""A residual Add followed by RMSNorm written out in ops ->
``com.microsoft.SkipSimplifiedLayerNormalization``.

- ``w * (t * Reciprocal(Sqrt(ReduceMean(Pow(t, 2), [-1]) + eps)))`` with ``t = Add(a, b)``
  (the dynamo exporter's Hugging Face ``LlamaRMSNorm`` after a residual Add), also with
  ``1 / Sqrt(.)`` or ``Div(t, Sqrt(.))`` and in any operand order
                    -> ``SkipSimplifiedLayerNormalization(a, b, w, epsilon=eps)``; where the
                       sum has other readers (the residual stream of a pre-norm block) they
                       read its fourth output, ``a + b``

Within float rounding: ORT's kernel computes ``t / sqrt(mean(t^2) + eps) * w`` in float32,
as the chain does (outputs within ~1e-6 of the output scale). Fused only for float32, a
constant ``eps``, an exponent of exactly 2, a mean over the last axis only (keepdims=1), a
weight ``w`` of shape ``[D]`` over the last dimension ``D``, and ``a``, ``b`` both provably
``[B, S, D]``; chains wrapped in Casts (half precision exports) are left alone.

An RMSNorm with no Add before it (the first layer's) is left as written: ORT's op for it,
``SimplifiedLayerNormalization``, is registered in the *default* ONNX domain, where ONNX has
no such op, so ``onnx.checker`` and ``verify`` reject a model that contains it (1 of the 61
norms of SmolLM2).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.attention.values import const, dims, last_dim, same_dim
from onnxpress.ir.edit import MS_DOMAIN
from onnxpress.passes.ort_fusion._common import Declines, users_before

__all__ = ["drop_unused_outputs", "skip_rms_norm_rules"]

# How the inverse root is written: Reciprocal(Sqrt), Div(1, Sqrt), or t divided by the root.
_FORMS = ("reciprocal", "one_over", "divide")


class SkipRmsNorm(RewriteRuleClassBase):
    def __init__(self, form: str, *, axes_input: bool, keep_sum: bool, declines: Declines):
        super().__init__(f"SkipRmsNorm_{form}{'_axes' if axes_input else ''}"
                         f"{'_sum' if keep_sum else ''}")
        self._form, self._axes_input, self._keep_sum = form, axes_input, keep_sum
        self._declines = declines

    def pattern(self, op, a, b, two, axes, eps, one, weight):
        total = op.Add(a, b, _outputs=["total"])
        square = op.Pow(total, two)
        if self._axes_input:
            mean = op.ReduceMean(square, axes, _allow_other_attributes=True, _outputs=["mean"])
        else:
            mean = op.ReduceMean(square, _allow_other_attributes=True, _outputs=["mean"])
        root = op.Sqrt(op.Add(mean, eps))
        if self._form == "divide":
            normed = op.Div(total, root)
        else:
            inverse = op.Reciprocal(root) if self._form == "reciprocal" else op.Div(one, root)
            normed = op.Mul(total, inverse)
        out = op.Mul(weight, normed, _outputs=["out"])
        return (out, total) if self._keep_sum else out

    def check(self, context, a, b, two, axes, eps, one, weight, mean, out, total) -> MatchResult:
        result = MatchResult()
        reason = _unsupported(total, two, axes if self._axes_input else None, eps, weight,
                              mean.producer())
        if reason is None and self._form == "one_over" and _scalar(one) != 1.0:
            reason = "the inverse root is not 1 / Sqrt(.)"
        if reason is None and not _same_shape_3d(a, b):
            reason = "the Add's operands are not provably both [B, S, D]"
        if reason is None and self._keep_sum:
            chain = {out.producer(), mean.producer().inputs[0].producer(),
                     *(v.producer() for v in out.producer().inputs)}
            reason = users_before(out.producer(), total, chain, "norm")
        if reason is None:
            return result
        self._declines.record(out.producer(), reason)
        return result.fail(reason)

    def rewrite(self, op, a, b, eps, weight, out, total, **_):
        outputs = op.SkipSimplifiedLayerNormalization(
            a, b, weight, epsilon=float(_scalar(eps)), _domain=MS_DOMAIN,
            _outputs=["", "", "", ""] if self._keep_sum else 1)
        if not self._keep_sum:
            return outputs
        return outputs[0], outputs[3]


def _scalar(value: ir.Value | None) -> float | None:
    array = const(value)
    if array is None or array.size != 1 or array.dtype != np.float32 or array.ndim > 1:
        return None
    return float(array.reshape(()))


def _unsupported(x, two, axes, eps, weight, reduce: ir.Node) -> str | None:
    """Why ORT's kernel cannot compute this chain, or None."""
    if x.dtype != ir.DataType.FLOAT:
        return f"x is {x.dtype}, not float32"
    if _scalar(two) != 2.0:
        return "the exponent is not the constant 2"
    if _scalar(eps) is None:
        return "epsilon is not a float32 constant"
    shape = dims(x)
    rank = len(shape) if shape is not None else None
    if axes is not None:
        wanted = const(axes)
        wanted = None if wanted is None else [int(a) for a in wanted.reshape(-1)]
    else:
        wanted = reduce.attributes.get_ints("axes")
        wanted = None if wanted is None else list(wanted)
    if wanted is None or rank is None or [a % rank for a in wanted] != [rank - 1]:
        return "the mean is not over the last axis alone (or x's rank is unknown)"
    if reduce.attributes.get_int("keepdims", 1) != 1:
        return "the mean does not keep its axis"
    weight_shape = dims(weight)
    if weight.dtype != ir.DataType.FLOAT or weight_shape is None or len(weight_shape) != 1:
        return "the weight is not a float32 vector"
    if not same_dim(weight_shape[0], last_dim(x)):
        return "the weight's length is not provably x's last dimension"
    return None


def _same_shape_3d(a: ir.Value, b: ir.Value) -> bool:
    """ORT's kernel wants the skip of the input's shape (or a broadcast we do not write)."""
    shape_a, shape_b = dims(a), dims(b)
    if shape_a is None or shape_b is None or len(shape_a) != 3 or len(shape_b) != 3:
        return False
    return all(same_dim(x, y) for x, y in zip(shape_a, shape_b)) and all(
        v.dtype == ir.DataType.FLOAT for v in (a, b))


def skip_rms_norm_rules(*, declines: Declines) -> RewriteRuleSet:
    rules = [SkipRmsNorm.rule(form, axes_input=axes_input, keep_sum=keep_sum, declines=declines)
             for form in _FORMS for axes_input in (True, False) for keep_sum in (False, True)]
    return RewriteRuleSet(rules, commute=True)


def drop_unused_outputs(model: ir.Model) -> None:
    """Leave the unused mean / inv_std_var outputs of the skip nodes unnamed (absent)."""
    for node in model.graph.all_nodes():
        if node.op_type == "SkipSimplifiedLayerNormalization" and node.domain == MS_DOMAIN:
            for out in node.outputs[1:3]:
                if not out.uses() and not out.is_graph_output():
                    out.name = ""
