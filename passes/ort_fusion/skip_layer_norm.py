"""Residual Add + LayerNormalization -> ``com.microsoft.SkipLayerNormalization``.

- ``LN(Add(a, b), gamma, beta)``               -> ``SkipLayerNormalization(a, b, gamma, beta)``
- ``LN(Add(Add(a, bias), b), gamma, beta)``    -> ``SkipLayerNormalization(a, b, gamma, beta,
                                                  bias)`` (the bias Add of a Linear folds in)

When the sum has other users (the residual stream of a pre-norm block) they read the node's
fourth output, ``input + skip + bias``. Within float rounding: the bias is added after the
skip instead of before, and ORT's kernel computes the variance in one pass
(``E[x^2] - mean^2``): ~1e-6 relative on DeiT-S and MiniLM, though it loses precision
where a row's mean is large against its spread. Fused only for float32, axis -1,
stash_type 1, gamma/beta/bias of shape [D], an input of rank 3 and a skip that ORT's kernel
accepts: the input's shape ``[B, S, D]``, ``[1, S, D]`` or ``[S, D]`` (the operands are
swapped when the broadcast one comes first); any other broadcast, or shapes not provably
equal, is left alone.

On ORT 1.31's CPU provider this fusion is *slower* than Add + LayerNormalization (its kernel
is a scalar loop with a division per element: ~3x the time of the two nodes it replaces on
ViT-S), which is why ``FuseForOrt`` runs it only when asked.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.attention.values import const, dims, same_dim, same_dims
from onnxpress.ir.edit import MS_DOMAIN
from onnxpress.passes.ort_fusion._common import Declines, users_before


class SkipLayerNorm(RewriteRuleClassBase):
    def __init__(self, *, bias: bool, keep_sum: bool, declines: Declines):
        super().__init__(f"SkipLayerNorm{'Bias' if bias else ''}{'Sum' if keep_sum else ''}")
        self._bias, self._keep_sum, self._declines = bias, keep_sum, declines

    def pattern(self, op, a, b, gamma, beta, bias):
        first = op.Add(a, bias) if self._bias else a
        total = op.Add(first, b, _outputs=["total"])
        out = op.LayerNormalization(total, gamma, beta, _allow_other_attributes=True,
                                    _outputs=["out"])
        return (out, total) if self._keep_sum else out

    def check(self, context, a, b, gamma, beta, bias, out, total) -> MatchResult:
        result = MatchResult()
        reason = _unsupported(out.producer(), a, b, gamma, beta, bias if self._bias else None)
        if reason is None and self._keep_sum:
            reason = users_before(out.producer(), total, {out.producer()}, "LayerNormalization")
        if reason is None:
            return result
        self._declines.record(out.producer(), reason)
        return result.fail(reason)

    def rewrite(self, op, a, b, gamma, beta, bias, out, total):
        node = out.producer()
        if _is_skip_shape(a, dims(b)) and not _is_skip_shape(b, dims(a)):
            a, b = b, a  # the full-shape operand is the input, the broadcast one the skip
        inputs = [a, b, gamma, beta] + ([bias] if self._bias else [])
        epsilon = node.attributes.get_float("epsilon", 1e-5)
        outputs = op.SkipLayerNormalization(*inputs, epsilon=epsilon, _domain=MS_DOMAIN,
                                            _outputs=["", "", "", ""] if self._keep_sum else 1)
        if not self._keep_sum:
            return outputs
        return outputs[0], outputs[3]


def _unsupported(node, a, b, gamma, beta, bias) -> str | None:
    """Why ORT's SkipLayerNormalization cannot compute this LayerNormalization, or None."""
    attrs = node.attributes
    if attrs.get_int("stash_type", 1) != 1 or attrs.get_int("axis", -1) not in (-1, 2):
        return "LayerNormalization is not over the last axis with stash_type 1"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "its mean or inverse-std output is used"
    shape_a, shape_b = dims(a), dims(b)
    full, skip = (shape_a, shape_b) if not _is_skip_shape(a, shape_b) else (shape_b, shape_a)
    if full is None or len(full) != 3:
        return "the input is not known to have rank 3"
    if not (same_dims(full, skip) or _is_skip_shape_of(skip, full)):
        return "the operands' shapes are not provably [B,S,D] + [B,S,D], [1,S,D] or [S,D]"
    for name, value in (("gamma", gamma), ("beta", beta), ("bias", bias)):
        if name == "bias" and value is None:
            continue
        array = const(value) if name == "bias" else None
        if name == "bias" and array is None:
            return "the bias is not constant"
        shape = dims(value)
        if shape is None or len(shape) != 1 or not same_dim(shape[0], full[2]):
            return f"{name} is not a vector of the hidden size"
        if value.dtype != ir.DataType.FLOAT:
            return f"{name} is not float32"
    return None


def _is_skip_shape_of(skip: tuple | None, full: tuple) -> bool:
    """``skip`` is a broadcast form ORT's kernel accepts: [1, S, D] or [S, D]."""
    if skip is None:
        return False
    if len(skip) == 3:
        return skip[0] == 1 and same_dims(skip[1:], full[1:])
    return len(skip) == 2 and same_dims(skip, full[1:])


def _is_skip_shape(value: ir.Value, other: tuple | None) -> bool:
    """True when ``value`` is the broadcast operand (and ``other`` the full-shape one)."""
    shape = dims(value)
    return other is not None and len(other) == 3 and _is_skip_shape_of(shape, other) and not (
        same_dims(shape, other)
    )


def drop_statistics_outputs(model: ir.Model) -> None:
    """Leave the unused mean / inv_std outputs of the fused nodes unnamed, which is how ONNX
    marks an optional output absent (the rewriter names every output it creates)."""
    for node in model.graph.all_nodes():
        if node.op_type == "SkipLayerNormalization" and node.domain == MS_DOMAIN:
            for out in node.outputs[1:3]:
                if not out.uses() and not out.is_graph_output():
                    out.name = ""


def skip_layer_norm_rules(*, declines: Declines) -> RewriteRuleSet:
    rules = [
        SkipLayerNorm.rule(bias=bias, keep_sum=keep_sum, declines=declines)
        for bias in (True, False)
        for keep_sum in (False, True)
    ]
    return RewriteRuleSet(rules, commute=True)


def add_as_sum(model: ir.Model) -> int:
    """``LN(Add(a, b))`` -> ``LN(Sum(a, b))`` where the Add's only reader is the LayerNorm: the
    shape ORT's own SkipLayerNormFusion turns into its slow kernel (the module docstring;
    596 vs 71 us for [1, 128, 384] at 2 threads). A two-input Sum is the same float addition,
    so the outputs are bit-identical; ORT's fusion matches Add only."""
    count = 0
    for node in model.graph.all_nodes():
        if node.op_type != "LayerNormalization" or node.domain != "" or not node.inputs:
            continue
        total = node.inputs[0]
        add = total.producer() if total is not None else None
        if (add is None or add.op_type != "Add" or add.domain != "" or len(add.inputs) != 2
                or len(list(total.uses())) != 1 or total.is_graph_output()):
            continue
        add.op_type = "Sum"
        count += 1
    return count
