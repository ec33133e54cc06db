"""What a QuantizeLinear / DequantizeLinear node computes, read from the node, and the
conditions under which ``fold-qdq``'s rewrites are exact.

The rewrites are exact only when they can prove what a node computes, so ``read`` answers
with a reason (a string) rather than guess: a scale or zero point that is not constant, an
integer type it cannot name, a negative axis over an unknown rank, an attribute that changes
the arithmetic (``precision``, a DequantizeLinear ``output_dtype``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array

__all__ = ["INT_RANGES", "QdqParams", "is_op", "rank_of", "read", "round_trip_exact"]

#: the integer types QuantizeLinear produces, and the range it saturates to
INT_RANGES: dict[ir.DataType, tuple[int, int]] = {
    ir.DataType.UINT8: (0, 255),
    ir.DataType.INT8: (-128, 127),
    ir.DataType.UINT16: (0, 65535),
    ir.DataType.INT16: (-32768, 32767),
    ir.DataType.UINT4: (0, 15),
    ir.DataType.INT4: (-8, 7),
    ir.DataType.UINT2: (0, 3),
    ir.DataType.INT2: (-2, 1),
}


@dataclasses.dataclass(frozen=True, eq=False)
class QdqParams:
    """Scale and zero point of one Q or DQ node.

    ``scale`` keeps its stored dtype; a one-element scale counts as per tensor (0-d, axis
    None), as ONNX Runtime treats it. ``zero_point`` is int64 with the scale's shape.
    ``axis`` is non-negative when the rank is known, else as written (then only equal axes
    compare equal)."""

    scale: np.ndarray
    zero_point: np.ndarray
    qtype: ir.DataType
    axis: int | None
    block_size: int

    @property
    def per_tensor(self) -> bool:
        return self.axis is None

    def same_as(self, other: QdqParams, axis: int | None = None) -> bool:
        """Equal types, bit-equal scales and zero points, equal block size, and ``other``'s
        axis equal to ``axis`` (this node's axis, mapped through whatever lies between)."""
        mapped = self.axis if axis is None else axis
        return (
            self.qtype == other.qtype
            and self.block_size == other.block_size
            and mapped == other.axis
            and _bit_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def is_op(node: ir.Node | None, op_type: str) -> bool:
    """``node`` is the standard-domain ``op_type``."""
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def rank_of(value: ir.Value | None) -> int | None:
    return len(value.shape) if value is not None and value.shape is not None else None


def read(node: ir.Node) -> QdqParams | str:
    """The parameters of a QuantizeLinear or DequantizeLinear node, or why they are unknown."""
    inputs = list(node.inputs) + [None] * (3 - len(node.inputs))
    scale = constant_array(inputs[1])
    if scale is None:
        return "its scale is not constant"
    zero = None
    if inputs[2] is not None:
        zero = constant_array(inputs[2])
        if zero is None:
            return "its zero point is not constant"
    qtype = _qtype(node, inputs[0], zero)
    if qtype is None:
        return "its integer type is unknown"
    if "precision" in node.attributes:
        return "its precision attribute changes the arithmetic"
    declared = node.attributes.get_int("output_dtype", 0)
    if declared not in (0, qtype if node.op_type == "QuantizeLinear" else scale_type(scale)):
        return "its output_dtype attribute differs from what its parameters say"
    block = node.attributes.get_int("block_size", 0)
    zero64 = np.zeros(scale.shape, np.int64) if zero is None else zero.astype(np.int64)
    if block == 0 and scale.size == 1:
        return QdqParams(scale.reshape(()), zero64.reshape(()), qtype, None, 0)
    axis = node.attributes.get_int("axis", 1)
    rank = rank_of(inputs[0])
    if axis < 0:
        if rank is None:
            return "its axis is negative and the input rank is unknown"
        axis += rank
    return QdqParams(scale, zero64, qtype, axis, block)


def scale_type(scale: np.ndarray) -> ir.DataType:
    return ir.DataType.from_numpy(scale.dtype)


def _qtype(node: ir.Node, x: ir.Value | None, zero: np.ndarray | None) -> ir.DataType | None:
    """The integer side's type: DQ's input, else the zero point's, else Q's output_dtype."""
    if node.op_type == "DequantizeLinear" and x is not None and x.dtype is not None:
        return x.dtype
    if zero is not None:
        return ir.DataType.from_numpy(zero.dtype)
    if node.op_type == "DequantizeLinear":
        return None
    output_dtype = node.attributes.get_int("output_dtype", 0)
    return ir.DataType(output_dtype) if output_dtype else ir.DataType.UINT8


def round_trip_exact(params: QdqParams) -> str | None:
    """None when ``Q(DQ(q)) == q`` for every q of the type, else why that is not proven.

    DQ computes ``p = fl((q - zp) * s)`` and Q ``rint(fl(p / s)) + zp`` (or ``p * fl(1/s)``).
    With n = q - zp, |n| <= qmax - qmin, each step is correctly rounded in the scale's type
    with unit roundoff u, so ``fl(p / s) = n (1 + e)`` with |e| <= 3u + O(u^2): when
    (qmax - qmin) * 3.01u < 0.5 it rounds back to n. That needs s > 0, normal (no underflow
    of n * s) and small enough that (qmax - qmin) * s does not overflow."""
    bounds = INT_RANGES.get(params.qtype)
    if bounds is None:
        return f"{params.qtype.name} is not an integer quantized type"
    if params.scale.dtype.kind != "f" and scale_type(params.scale) != ir.DataType.BFLOAT16:
        return "the scale is not a float"
    info = _finfo(params.scale.dtype)
    span = bounds[1] - bounds[0]
    if span * 3.01 * float(info.eps) / 2 >= 0.5:
        return f"a {params.scale.dtype} scale is too coarse for {params.qtype.name}"
    scale = params.scale.astype(np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale < float(info.smallest_normal)):
        return "a scale is not a positive normal float"
    if np.any(scale * span >= float(info.max)):
        return "a scale is so large that dequantized values overflow"
    return None


def _finfo(dtype: np.dtype):
    try:
        return np.finfo(dtype)
    except ValueError:  # bfloat16 and other ml_dtypes floats
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
