"""The lowerings of ``lower-qdq``, one planner per float op: each reads the QDQ form around
a node and either says why it cannot lower it (a string) or returns a ``Lowering``, which
records the integer op without touching the graph (the pass places it: :mod:`.lower_qdq`).

Terms: a *dequantized* input is ``DequantizeLinear(q, s, zp)`` with constant 8-bit
parameters; a *quantized* output is one read only by a per-tensor ``QuantizeLinear``,
directly or through single-use data-movement ops (``QUANTIZED_MOVES``) and Relu/Clip,
which then run on the integers (a Relu/Clip as ``Clip(q, Q(lo), Q(hi))``): Q is
elementwise and non-decreasing, so it commutes with ops that copy, reorder or take maxima
of elements, and with clipping (exact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array, is_constant
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import MS_DOMAIN, describe
from onnxpress.ir.layers import Layer, linear_layer
from onnxpress.ir.qdq import QdqParams, is_op, rank_of, read

__all__ = ["MS_DOMAIN", "QUANTIZED_MOVES", "RULES", "Context", "Lowering", "Quantized",
           "Requantized", "dequantized", "integer_clip", "requantized"]

#: data-movement ops that may sit between a lowered op and its QuantizeLinear
QUANTIZED_MOVES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")
_BYTE_TYPES = (ir.DataType.INT8, ir.DataType.UINT8)


@dataclasses.dataclass(frozen=True)
class Context:
    opset: int
    contrib: bool  # com.microsoft ops allowed


@dataclasses.dataclass(frozen=True)
class Quantized:
    """An 8-bit tensor: the integers (a DQ's input or a Q's output), its parameters, and
    the node they were read from."""

    value: ir.Value
    params: QdqParams
    node: ir.Node

    def scale(self, b: Builder) -> ir.Value:
        return _constant(b, self.node.inputs[1], self.params.scale, f"{self.value.name}_scale")

    def zero(self, b: Builder) -> ir.Value:
        stored = self.node.inputs[2] if len(self.node.inputs) > 2 else None
        array = self.params.zero_point.astype(self.params.qtype.numpy())
        return _constant(b, stored, array, f"{self.value.name}_zero_point")


@dataclasses.dataclass(frozen=True)
class Requantized:
    """The QuantizeLinear a result feeds, and the data-movement ops before it."""

    q: Quantized
    moves: tuple[ir.Node, ...]


@dataclasses.dataclass(frozen=True)
class Lowering:
    """``replaced``: the float nodes in graph order (the last one's output is the result);
    ``build`` records the integer nodes and returns the new result; ``output``: the Q it
    absorbs, or None for a float result."""

    replaced: tuple[ir.Node, ...]
    build: Callable[[Builder], ir.Value]
    output: Requantized | None
    becomes: str


def _constant(b: Builder, value: ir.Value | None, array: np.ndarray, name: str) -> ir.Value:
    """``value`` when it is an initializer of the graph (defined before any node), else a
    new initializer holding ``array``."""
    if value is not None and value.is_initializer() and value.graph is b.graph:
        return value
    return b.initializer(np.asarray(array), name)


def _quantized(node: ir.Node, value: ir.Value) -> Quantized | str:
    params = read(node)
    where = describe(node)
    if isinstance(params, str):
        return f"{where}: {params}"
    if params.qtype not in _BYTE_TYPES:
        return f"{where} is {params.qtype.name}; integer ops take int8/uint8"
    if params.block_size or params.scale.dtype != np.float32:
        return f"{where} is blocked or has a non-float32 scale"
    return Quantized(value, params, node)


def dequantized(value: ir.Value | None, *, per_tensor: bool = True) -> Quantized | str:
    dq = value.producer() if value is not None else None
    if not is_op(dq, "DequantizeLinear"):
        return f"input {value.name if value is not None else None!r} is not dequantized"
    assert dq is not None and dq.inputs[0] is not None
    found = _quantized(dq, dq.inputs[0])
    if isinstance(found, Quantized) and per_tensor and not found.params.per_tensor:
        return f"DequantizeLinear {dq.name!r} is per axis where the op takes one scale"
    return found


def requantized(node: ir.Node, ctx: Context) -> Requantized | str | None:
    """The Q that alone reads ``node``'s output (through data movement); None when the
    output stays float; a string when a Q is there but cannot be absorbed."""
    value, moves = node.outputs[0], []
    while not value.is_graph_output() and len(value.uses()) == 1:
        user, index = value.uses()[0]
        if is_op(user, "QuantizeLinear") and index == 0:
            found = _quantized(user, user.outputs[0])
            if isinstance(found, Quantized) and not found.params.per_tensor:
                return f"QuantizeLinear {user.name!r} is per axis"
            return found if isinstance(found, str) else Requantized(found, tuple(moves))
        movable = user.op_type in QUANTIZED_MOVES and user.domain == "" and index == 0
        if user.op_type in ("Relu", "Clip") and user.domain == "":
            movable = ctx.opset >= 12 and _clip_bounds(user) is not None
        if not movable or len(user.outputs) != 1 or (user.op_type == "MaxPool"
                                                      and ctx.opset < 12):
            return None
        moves.append(user)
        value = user.outputs[0]
    return None


def _same_type(out: Requantized | str | None, x: Quantized) -> Requantized | str | None:
    """``out`` when its integer type is the input's (ONNX Runtime's QLinearConv,
    QLinearMatMul and QGemm kernels take u8 -> u8 and s8 -> s8), else the reason."""
    if isinstance(out, Requantized) and out.q.params.qtype != x.params.qtype:
        return f"input is {x.params.qtype.name} but output {out.q.params.qtype.name}"
    return out


def _reason(*found: Quantized | str) -> str:
    return next(f for f in found if isinstance(f, str))


def _clip_bounds(node: ir.Node) -> tuple[float, float] | None:
    """A Relu's or a Clip's (opset >= 11 form) bounds, when constant scalars."""
    bounds = [0.0 if node.op_type == "Relu" else -np.inf, np.inf]
    for index in (1, 2):
        value = node.inputs[index] if node.op_type == "Clip" and len(node.inputs) > index \
            else None
        if value is not None:
            array = constant_array(value)
            if array is None or array.size != 1:
                return None
            bounds[index - 1] = float(array.reshape(()))
    return bounds[0], bounds[1]


def integer_clip(b: Builder, node: ir.Node, source: ir.Value, q: Quantized) -> ir.Value:
    """``Clip(q(y), Q(lo), Q(hi))`` for ``Q(Relu|Clip(y))`` (exact: Q is non-decreasing, so
    it commutes with clipping to its own images of the bounds)."""
    bounds = _clip_bounds(node)
    assert bounds is not None
    params = quant_math.QuantParams(q.params.scale,
                                    q.params.zero_point.astype(q.params.qtype.numpy()))
    lo, hi = (quant_math.quantize(np.float32(v), params) for v in bounds)
    return b.op("Clip", [source, b.initializer(lo, f"{node.name}_min_quantized"),
                         b.initializer(hi, f"{node.name}_max_quantized")], name=node.name)


def _int_inputs(node: ir.Node, count: int) -> list[Quantized] | str:
    found = [dequantized(node.inputs[i] if i < len(node.inputs) else None) for i in range(count)]
    reasons = [f for f in found if isinstance(f, str)]
    return reasons[0] if reasons else found  # type: ignore[return-value]


def _weight(value: ir.Value | None, axis: int) -> Quantized | str:
    """A constant 8-bit weight, per tensor or per channel along ``axis`` (rank 2 or more)."""
    w = dequantized(value, per_tensor=False)
    if isinstance(w, str):
        return w
    if not is_constant(w.value):
        return f"weight {w.value.name!r} is not constant"
    rank = rank_of(w.value)
    if w.params.axis is not None and (rank is None or w.params.axis != axis % rank):
        wanted = axis if rank is None else axis % rank
        return f"weight {w.value.name!r} is quantized along axis {w.params.axis}, not {wanted}"
    if np.unique(w.params.zero_point).size > 1:
        return f"weight {w.value.name!r} has different zero points per channel"
    return w


def _int32_bias(value: ir.Value | None, x: Quantized, w: Quantized, factor: float = 1.0):
    """The bias as int32 at scale ``s_x * s_w`` (what integer kernels add): the DQ's own
    int32 tensor when its scale is exactly that (exact), else the float bias (``factor``
    times it) rounded to that grid (lossy by at most half a step of ``s_x * s_w``)."""
    if value is None:
        return None
    grid = np.float32(x.params.scale) * w.params.scale.astype(np.float32)
    dq = value.producer()
    if is_op(dq, "DequantizeLinear") and factor == 1.0:
        params = read(dq)
        if (not isinstance(params, str) and params.qtype == ir.DataType.INT32
                and not params.zero_point.any() and is_constant(dq.inputs[0])
                and _same_values(params.scale, grid)):
            return dq.inputs[0]
    array = _float_constant(value)
    if array is None:
        return f"bias {value.name!r} is not constant"
    return quant_math.int32_bias(array * np.float32(factor), x.params.scale, w.params.scale)[0]


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(*np.broadcast_arrays(a, b)))
    except ValueError:  # shapes that do not broadcast
        return False


def _float_constant(value: ir.Value) -> np.ndarray | None:
    """A constant float tensor, or the dequantized value of DQ(constant)."""
    array = constant_array(value)
    if array is not None:
        return array.astype(np.float32)
    dq = value.producer()
    params = read(dq) if is_op(dq, "DequantizeLinear") else "not dequantized"
    q = constant_array(dq.inputs[0]) if dq is not None else None
    if isinstance(params, str) or q is None:
        return None
    return quant_math.dequantize(q, quant_math.QuantParams(params.scale, params.zero_point,
                                                           params.axis))


def _bias_input(b: Builder, bias, name: str) -> ir.Value | None:
    if bias is None or isinstance(bias, ir.Value):
        return bias
    return b.initializer(bias, name)


def plan_conv(node: ir.Node, ctx: Context) -> Lowering | str:
    """DQ(x), DQ(w) [, DQ(b)] -> Conv -> Q  =>  QLinearConv."""
    x, w = dequantized(node.inputs[0]), _weight(node.inputs[1], 0)
    if isinstance(x, str) or isinstance(w, str):
        return _reason(x, w)
    out = _same_type(requantized(node, ctx), x)
    if not isinstance(out, Requantized):
        return out or "its output is float (no integer Conv with float output)"
    bias = _int32_bias(node.inputs[2] if len(node.inputs) > 2 else None, x, w)
    if isinstance(bias, str):
        return bias

    def build(b: Builder) -> ir.Value:
        y = out.q
        inputs = [x.value, x.scale(b), x.zero(b), w.value, w.scale(b), w.zero(b), y.scale(b),
                  y.zero(b), _bias_input(b, bias, f"{node.name}_bias_int32")]
        return b.op("QLinearConv", inputs if bias is not None else inputs[:8],
                    dict(node.attributes), name=node.name)

    return Lowering((node,), build, out, "QLinearConv")


def _b_operand(value: ir.Value | None) -> Quantized | str:
    """MatMul's B: per tensor, or a constant [K, N] weight per column."""
    found = dequantized(value, per_tensor=False)
    if isinstance(found, str) or found.params.per_tensor:
        return found
    return _weight(value, -1) if rank_of(found.value) == 2 else "per-column B not of rank 2"


def plan_matmul(node: ir.Node, ctx: Context) -> Lowering | str:
    """DQ(a), DQ(b) -> MatMul -> Q => QLinearMatMul; float output => MatMulIntegerToFloat
    (contrib, absorbing a following Add of a constant [N] bias) or MatMulInteger -> Cast ->
    Mul(s_a * s_b)."""
    a, b_in = dequantized(node.inputs[0]), _b_operand(node.inputs[1])
    if isinstance(a, str) or isinstance(b_in, str):
        return _reason(a, b_in)
    out = _same_type(requantized(node, ctx), a)
    if isinstance(out, Requantized):
        def build_q(b: Builder) -> ir.Value:
            return b.op("QLinearMatMul", [a.value, a.scale(b), a.zero(b), b_in.value,
                                          b_in.scale(b), b_in.zero(b), out.q.scale(b),
                                          out.q.zero(b)], name=node.name)
        return Lowering((node,), build_q, out, "QLinearMatMul")
    return _float_matmul(node, a, b_in, ctx, _bias_after(node, b_in) if ctx.contrib else None)


def _bias_after(node: ir.Node, b_in: Quantized) -> tuple[ir.Node, ir.Value, np.ndarray] | None:
    """The Add of a constant float bias of B's last dimension that alone reads ``node``'s
    output."""
    value, dims = node.outputs[0], b_in.value.shape
    if dims is None or not dims or not isinstance(dims[-1], int):
        return None
    if value.is_graph_output() or len(value.uses()) != 1:
        return None
    add = value.uses()[0].node
    if not is_op(add, "Add") or len(add.inputs) != 2:
        return None
    other = add.inputs[1 - value.uses()[0].idx]
    array = constant_array(other)
    if other is None or array is None or array.dtype != np.float32 or array.shape != (dims[-1],):
        return None
    return add, other, array


def _float_matmul(node: ir.Node, a: Quantized, w: Quantized, ctx: Context,
                  bias: tuple[ir.Node, ir.Value, np.ndarray] | None) -> Lowering:
    replaced = (node,) if bias is None else (node, bias[0])

    def build(b: Builder) -> ir.Value:
        return _emit_float_matmul(b, node, (a, w, w.value), ctx, bias)

    return Lowering(replaced, build, None,
                    "MatMulIntegerToFloat" if ctx.contrib else "MatMulInteger")


def _emit_float_matmul(b: Builder, node: ir.Node, operands: tuple[Quantized, Quantized, ir.Value],
                       ctx: Context, bias: tuple[ir.Node, ir.Value, np.ndarray] | None,
                       alpha: float = 1.0) -> ir.Value:
    """``alpha * a @ b (+ bias)`` with a float result, ``b`` the integers of ``w`` (maybe
    transposed): MatMulIntegerToFloat (contrib) or MatMulInteger -> Cast -> Mul."""
    a, w, b_value = operands
    if ctx.contrib:
        scale_b = w.scale(b) if alpha == 1.0 else b.initializer(
            w.params.scale * np.float32(alpha), f"{node.name}_b_scale")
        inputs = [a.value, b_value, a.scale(b), scale_b, a.zero(b), w.zero(b)]
        if bias is not None:
            inputs.append(_constant(b, bias[1], bias[2], f"{node.name}_bias"))
        return b.op("MatMulIntegerToFloat", inputs, domain=MS_DOMAIN, name=node.name)
    product = np.float32(a.params.scale) * w.params.scale.astype(np.float32) * np.float32(alpha)
    acc = b.op("MatMulInteger", [a.value, b_value, a.zero(b), w.zero(b)], name=node.name)
    real = b.op("Cast", [acc], {"to": ir.DataType.FLOAT}, name=f"{node.name}_cast")
    return b.op("Mul", [real, b.initializer(product, f"{node.name}_scale")],
                name=f"{node.name}_rescale")


def plan_gemm(node: ir.Node, ctx: Context) -> Lowering | str:
    """DQ(a), DQ(w) [, C] -> Gemm [-> Q] => com.microsoft.QGemm (quantized or float output);
    without contrib: MatMulInteger on the transposed int8 weight, Cast, Mul, Add(beta * C),
    any Q staying after it."""
    attrs, layer = node.attributes, linear_layer(node)
    assert layer is not None
    alpha, beta = attrs.get_float("alpha", 1.0), attrs.get_float("beta", 1.0)
    a, w = dequantized(node.inputs[0]), _weight(node.inputs[1], layer.out_axis)
    if isinstance(a, str) or isinstance(w, str):
        return _reason(a, w)
    if rank_of(w.value) != 2:
        return "Gemm weight of unknown rank"
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if not ctx.contrib:
        return _plain_gemm(node, ctx, a, w, c, (layer, alpha, beta))
    out = _same_type(requantized(node, ctx), a)
    out = out if isinstance(out, Requantized) else None  # else a float result, Q after it
    bias = _int32_bias(c, a, w, beta / alpha)
    if isinstance(bias, str):
        return bias

    def build(b: Builder) -> ir.Value:
        inputs = [a.value, a.scale(b), a.zero(b), w.value, w.scale(b), w.zero(b),
                  _bias_input(b, bias, f"{node.name}_bias_int32")]
        if out is not None:
            inputs += [out.q.scale(b), out.q.zero(b)]
        return b.op("QGemm", inputs, {"alpha": alpha, **layer.transposes()},
                    domain=MS_DOMAIN, name=node.name)

    return Lowering((node,), build, out, "QGemm")


def _plain_gemm(node: ir.Node, ctx: Context, a: Quantized, w: Quantized, c: ir.Value | None,
                attrs: tuple[Layer, float, float]) -> Lowering | str:
    layer, alpha, beta = attrs
    if layer.trans_a:
        return "Gemm with transA needs contrib=true (QGemm)"
    c_array = None if c is None else _float_constant(c)
    if c is not None and c_array is None:
        return f"bias {c.name!r} is not constant"

    def build(b: Builder) -> ir.Value:
        weight = constant_array(w.value)
        assert weight is not None
        kn = b.initializer(np.ascontiguousarray(weight.T), f"{w.value.name}_t") \
            if layer.out_axis == 0 else w.value
        product = _emit_float_matmul(b, node, (a, w, kn), ctx, None, alpha)
        if c_array is None:
            return product
        shift = b.initializer(c_array * np.float32(beta), f"{node.name}_bias")
        return b.op("Add", [product, shift], name=f"{node.name}_bias_add")

    return Lowering((node,), build, None, "MatMulInteger")


def _elementwise(op_type: str, arity: int) -> Callable[[ir.Node, Context], Lowering | str]:
    """DQ inputs -> op -> Q => com.microsoft.QLinear<op>, all per tensor and one 8-bit type."""

    def plan(node: ir.Node, ctx: Context) -> Lowering | str:
        if not ctx.contrib:
            return f"QLinear{node.op_type} is a com.microsoft op (contrib=false)"
        ins = _int_inputs(node, arity if arity else len(node.inputs))
        if isinstance(ins, str):
            return ins
        out = requantized(node, ctx)
        if not isinstance(out, Requantized):
            return out or "its output is not quantized"
        if any(i.params.qtype != out.q.params.qtype for i in ins):
            return "inputs and output differ in integer type"

        def build(b: Builder) -> ir.Value:
            triples = [v for i in ins for v in (i.value, i.scale(b), i.zero(b))]
            y = [out.q.scale(b), out.q.zero(b)]
            inputs = y + triples if node.op_type == "Concat" else triples + y
            return b.op(op_type, inputs, dict(node.attributes), domain=MS_DOMAIN,
                        name=node.name)

        return Lowering((node,), build, out, op_type)

    return plan


RULES: dict[str, Callable[[ir.Node, Context], Lowering | str]] = {
    "Conv": plan_conv,
    "MatMul": plan_matmul,
    "Gemm": plan_gemm,
    "Add": _elementwise("QLinearAdd", 2),
    "Mul": _elementwise("QLinearMul", 2),
    "GlobalAveragePool": _elementwise("QLinearGlobalAveragePool", 1),
    "Concat": _elementwise("QLinearConcat", 0),
}
