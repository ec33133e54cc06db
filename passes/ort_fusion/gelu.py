"""Erf-GELU chains -> one ``Gelu`` node; ``Gelu(Add(a, bias))`` -> ``BiasGelu``.

- ``x * (0.5 * (1 + Erf(x / sqrt2)))``   (the dynamo exporter's spelling)
  ``(x * (1 + Erf(x / sqrt2))) * 0.5``   (TorchScript's)
  ``(x * 0.5) * (1 + Erf(x / sqrt2))``   (Hugging Face's ``x * 0.5 * (1 + erf(...))``)
  each with ``x * 0.70710678`` in place of ``x / 1.4142135`` and in any operand order
                                         -> ``com.microsoft.Gelu(x)``, or ONNX ``Gelu(x)``
                                            when the model imports opset >= 20
- ``Gelu(Add(a, bias))``, bias a constant [D] and a's last dimension D
                                         -> ``com.microsoft.BiasGelu(a, bias)``

Within float rounding: ORT's Gelu and Erf share one erf implementation (outputs agree to
~1e-7 relative). Only float32 chains whose constants are 0.5 and 1 exactly and sqrt(2) (or
1/sqrt(2)) within 1e-6 relative are fused, and only when no intermediate value has other
users (the rewriter checks that). ORT itself fuses Add + Gelu into BiasGelu at
``ORT_ENABLE_EXTENDED``; writing BiasGelu keeps the fusion at lower optimisation levels. The
two Gelu domains run equally fast (both become BiasGelu), so ONNX's is used where allowed.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.attention.values import close, const, dims, last_dim, same_dim, scalar
from onnxpress.ir.edit import MS_DOMAIN
from onnxpress.passes.ort_fusion._common import Declines

# Where the 0.5 multiplies: onto (1 + erf), last, or onto x first.
_FORMS = ("half_on_erf", "half_last", "half_on_x")


class ErfGelu(RewriteRuleClassBase):
    def __init__(self, form: str, *, divide: bool, onnx_gelu: bool, declines: Declines):
        super().__init__(f"ErfGelu_{form}_{'div' if divide else 'mul'}")
        self._form, self._divide = form, divide
        self._onnx_gelu, self._declines = onnx_gelu, declines

    def pattern(self, op, x, root, one, half):
        scaled = op.Div(x, root) if self._divide else op.Mul(x, root)
        plus = op.Add(op.Erf(scaled), one)
        if self._form == "half_on_erf":
            return op.Mul(x, op.Mul(half, plus), _outputs=["out"])
        if self._form == "half_last":
            return op.Mul(op.Mul(x, plus), half, _outputs=["out"])
        return op.Mul(op.Mul(x, half), plus, _outputs=["out"])

    def check(self, context, x, root, one, half, out) -> MatchResult:
        result = MatchResult()
        shape = dims(x)
        rank = len(shape) if shape is not None else None
        values = [scalar(v, rank) for v in (root, one, half)]
        if any(v is None for v in values):
            reason = "a constant is not a float32 scalar that keeps x's shape"
        elif values[1] != 1.0 or values[2] != 0.5:
            reason = f"constants {values[1]:g} and {values[2]:g} are not 1 and 0.5"
        elif not close(values[0], math.sqrt(2) if self._divide else math.sqrt(0.5)):
            wanted = "/ sqrt(2)" if self._divide else "* 1/sqrt(2)"
            reason = f"x is scaled by {values[0]:.8g}, not {wanted}"
        elif x.dtype not in (None, ir.DataType.FLOAT):
            reason = f"x is {x.dtype}, not float32"
        else:
            return result
        self._declines.record(out.producer(), reason)
        return result.fail(reason)

    def rewrite(self, op, x, **_):
        if self._onnx_gelu:
            return op.Gelu(x)
        return op.Gelu(x, _domain=MS_DOMAIN)


class BiasGelu(RewriteRuleClassBase):
    def __init__(self, *, onnx_gelu: bool, declines: Declines):
        super().__init__("BiasGelu")
        self._onnx_gelu, self._declines = onnx_gelu, declines

    def pattern(self, op, a, bias):
        total = op.Add(a, bias)
        if self._onnx_gelu:
            return op.Gelu(total, _outputs=["out"])
        return op.Gelu(total, _domain=MS_DOMAIN, _outputs=["out"])

    def check(self, context, a, bias, out) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        values = const(bias)
        if values is None and const(a) is not None:
            return result.fail("the operands are bound the other way round")  # commuted twin
        if node.attributes.get_string("approximate", "none") != "none":
            reason = "the Gelu uses the tanh approximation"
        elif values is None or values.dtype != np.float32 or values.ndim != 1:
            reason = "the bias is not a constant float32 vector"
        elif not same_dim(last_dim(a), values.shape[0]):
            reason = f"the last dimension of the input is not known to be {values.shape[0]}"
        else:
            return result
        self._declines.record(node, reason)
        return result.fail(reason)

    def rewrite(self, op, a, bias, **_):
        return op.BiasGelu(a, bias, _domain=MS_DOMAIN)


def gelu_rules(*, onnx_gelu: bool, declines: Declines) -> RewriteRuleSet:
    rules = [
        ErfGelu.rule(form, divide=divide, onnx_gelu=onnx_gelu, declines=declines)
        for form in _FORMS
        for divide in (True, False)
    ]
    return RewriteRuleSet(rules, commute=True)


def bias_gelu_rules(*, onnx_gelu: bool, declines: Declines) -> RewriteRuleSet:
    return RewriteRuleSet([BiasGelu.rule(onnx_gelu=onnx_gelu, declines=declines)], commute=True)
