"""Pattern rules that replace no-op data-movement nodes by their input (bit-exact).

- ``Reshape(x, s)``        -> ``x``  when x's static shape already is the target shape
- ``Slice(x, b, e, a, s)`` -> ``x``  when every sliced axis keeps its full range, step 1
- ``Pad(x, pads)``         -> ``x``  when every pad is 0
- ``x*1``, ``1*x``, ``x/1``, ``x+0``, ``0+x``, ``x-0`` -> ``x`` when the constant is exactly
  1 (or 0) everywhere and does not broadcast x to a larger shape (``-0.0 + 0`` is ``+0.0``:
  equal, though not the same bits)
- ``Dropout(x)``           -> ``x``  in inference (no training_mode, or constant false;
                                      before opset 7 only with is_test=1), mask unused

Each check returns the reason it declined, so a tracer can say why a node stayed.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.analysis import constant_array, static_shape


def _resolved_reshape(dims: tuple[int, ...], target: np.ndarray, allowzero: bool):
    out = [int(t) for t in target]
    if not allowzero:
        out = [dims[i] if t == 0 and i < len(dims) else t for i, t in enumerate(out)]
    if out.count(-1) == 1:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        total = int(np.prod(dims, dtype=np.int64))
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return tuple(out)


class ReshapeNoOp(RewriteRuleClassBase):
    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _outputs=["out"])

    def check(self, context, x, shape, out) -> MatchResult:
        result = MatchResult()
        dims = static_shape(x)
        target = constant_array(shape)
        if dims is None or target is None:
            return result.fail("input shape or target shape is not static")
        allowzero = out.producer().attributes.get_int("allowzero", 0) == 1
        if _resolved_reshape(dims, target, allowzero) != dims:
            return result.fail("the reshape changes the shape")
        return result

    def rewrite(self, op, x, shape, out):
        return op.Identity(x)


class SliceNoOp(RewriteRuleClassBase):
    def pattern(self, op, x, starts, ends):
        return op.Slice(x, starts, ends, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, starts, ends, out) -> MatchResult:
        result = MatchResult()
        dims = static_shape(x)
        if dims is None:
            return result.fail("input shape is not static")
        inputs = list(out.producer().inputs) + [None, None]
        arrays = [constant_array(v) for v in (starts, ends)]
        axes = constant_array(inputs[3]) if inputs[3] is not None else np.arange(len(arrays[0]))
        steps = constant_array(inputs[4]) if inputs[4] is not None else np.ones_like(arrays[0])
        if any(a is None for a in (*arrays, axes, steps)):
            return result.fail("starts, ends, axes or steps are not constant")
        for start, end, axis, step in zip(arrays[0], arrays[1], axes, steps):
            dim = dims[int(axis)]
            start = int(start) + dim if start < 0 else int(start)
            end = int(end) + dim if end < 0 else int(end)
            if step != 1 or min(start, dim) != 0 or end < dim:
                return result.fail(f"axis {int(axis)} is cut")
        return result

    def rewrite(self, op, x, starts, ends, out):
        return op.Identity(x)


class PadNoOp(RewriteRuleClassBase):
    def pattern(self, op, x, pads):
        return op.Pad(x, pads, _allow_other_inputs=True)

    def check(self, context, x, pads) -> MatchResult:
        result = MatchResult()
        values = constant_array(pads)
        if values is None or np.any(values != 0):
            return result.fail("pads are not all constant zeros")
        return result

    def rewrite(self, op, x, pads):
        return op.Identity(x)


class PadAttributeNoOp(RewriteRuleClassBase):
    """Pad before opset 11 carries its pads as an attribute."""

    def pattern(self, op, x):
        return op.Pad(x, _outputs=["out"])

    def check(self, context, x, out) -> MatchResult:
        result = MatchResult()
        pads = out.producer().attributes.get_ints("pads")
        if pads is None or any(pads):
            return result.fail("pads attribute is missing or not all zeros")
        return result

    def rewrite(self, op, x, out):
        return op.Identity(x)


class DropoutInference(RewriteRuleClassBase):
    def pattern(self, op, x):
        return op.Dropout(x, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, out) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
            return result.fail("the dropout mask is used")
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            mode = constant_array(node.inputs[2])
            if mode is None or bool(mode):
                return result.fail("training_mode is not constant false")
        version = node.graph.opset_imports.get("", 1) if node.graph is not None else None
        if version is not None and version < 7 and node.attributes.get_int("is_test", 0) != 1:
            return result.fail("before opset 7 Dropout is inference only with is_test=1")
        return result

    def rewrite(self, op, x, out):
        return op.Identity(x)


def _neutral(x: ir.Value, constant: ir.Value, neutral: float) -> MatchResult:
    result = MatchResult()
    array = constant_array(constant)
    if array is None or not np.all(array == neutral):
        return result.fail(f"the other operand is not exactly {neutral:g} everywhere")
    if x.dtype is None or constant.dtype != x.dtype:
        return result.fail("the operand types are unknown or differ")
    if array.ndim == 0:
        return result
    dims = static_shape(x)
    if dims is None or array.ndim > len(dims):
        return result.fail("the constant may broadcast x to a larger shape")
    for size, dim in zip(reversed(array.shape), reversed(dims)):
        if size not in (1, dim):
            return result.fail("the constant broadcasts x to a larger shape")
    return result


class _ArithmeticNoOp(RewriteRuleClassBase):
    op_type = ""
    neutral = 0.0
    constant_first = False

    def pattern(self, op, x, c):
        args = (c, x) if self.constant_first else (x, c)
        return getattr(op, self.op_type)(*args)

    def check(self, context, x, c) -> MatchResult:
        return _neutral(x, c, self.neutral)

    def rewrite(self, op, x, c):
        return op.Identity(x)


def _arithmetic_rule(op_type: str, neutral: float, constant_first: bool = False):
    cls = type(f"{op_type}NoOp{'Left' if constant_first else ''}", (_ArithmeticNoOp,),
               {"op_type": op_type, "neutral": neutral, "constant_first": constant_first})
    return cls.rule()


def rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            ReshapeNoOp.rule(),
            SliceNoOp.rule(),
            PadNoOp.rule(),
            PadAttributeNoOp.rule(),
            DropoutInference.rule(),
            _arithmetic_rule("Mul", 1.0),
            _arithmetic_rule("Mul", 1.0, constant_first=True),
            _arithmetic_rule("Div", 1.0),
            _arithmetic_rule("Add", 0.0),
            _arithmetic_rule("Add", 0.0, constant_first=True),
            _arithmetic_rule("Sub", 0.0),
        ]
    )
