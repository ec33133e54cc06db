"""Row lookup (an embedding ``Gather``) straight from a ``MatMulNBits`` weight, so a table
that is both the token embedding and the (tied) LM head is stored once, quantized once.

``MatMulNBits`` keeps its weight as ``B [N, n_blocks, block_size * bits / 8]`` packed codes
with ``scales [N * n_blocks]`` (and packed ``zero_points``); row ``n`` of the float weight is
output channel ``n``, which is exactly embedding row ``n`` of the tied table. The lookup
gathers the rows of ``B``, ``scales`` and ``zero_points`` for the indices and dequantizes
only those rows in standard ONNX ops (opset 13+): unpacking two 4-bit codes per byte by
integer ``Div``/``Sub``, then ``(code - zero_point) * scale`` in float32, the same arithmetic
MatMulNBits does, so the looked-up rows equal ``Blocked.dequantize()``'s bit for bit.
ONNX Runtime keeps ``B`` readable for the Gather after MatMulNBits prepacks its own copy.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.builder import Builder

__all__ = ["packed_rows"]


def packed_rows(builder: Builder, indices: ir.Value, *, b: ir.Value, scales: ir.Value,
                zero_points: ir.Value | None, n: int, k: int, bits: int, block_size: int,
                rank: int) -> ir.Value:
    """The float32 rows ``indices`` (of rank ``rank``) of the ``[N, K]`` weight stored as
    MatMulNBits' ``b``, ``scales`` and ``zero_points`` (None: symmetric, the operator's
    default zero point ``2**(bits - 1)``); shape ``indices.shape + [K]``."""
    n_blocks = -(-k // block_size)
    name = b.name

    def const(array: np.ndarray, suffix: str) -> ir.Value:
        return builder.initializer(np.asarray(array), f"{name}_lookup_{suffix}")

    keep = [0] * rank  # Reshape's 0: copy the indices' dims
    codes = _unpack(builder, builder.op("Gather", [b, indices], {"axis": 0}), bits, const,
                    keep + [n_blocks, block_size])
    table = builder.op("Reshape", [scales, const(np.array([n, n_blocks], np.int64), "scales")])
    scale = builder.op("Unsqueeze", [builder.op("Gather", [table, indices], {"axis": 0}),
                                     const(np.array([-1], np.int64), "last")])
    if zero_points is None:
        zero = const(np.array(2 ** (bits - 1), np.float32), "zero")
    else:
        width = -(-n_blocks * bits // 8)
        zeros = builder.op("Reshape", [zero_points, const(np.array([n, width], np.int64),
                                                          "zero_shape")])
        unpacked = _unpack(builder, builder.op("Gather", [zeros, indices], {"axis": 0}), bits,
                           const, keep + [width * 8 // bits])
        if width * 8 // bits != n_blocks:
            unpacked = builder.op("Slice", [unpacked, const(np.array([0], np.int64), "start"),
                                            const(np.array([n_blocks], np.int64), "stop"),
                                            const(np.array([-1], np.int64), "axes")])
        zero = builder.op("Unsqueeze", [builder.op("Cast", [unpacked],
                                                   {"to": ir.DataType.FLOAT}),
                                        const(np.array([-1], np.int64), "zero_axis")])
    levels = builder.op("Sub", [builder.op("Cast", [codes], {"to": ir.DataType.FLOAT}), zero])
    rows = builder.op("Reshape", [builder.op("Mul", [levels, scale]),
                                  const(np.array(keep + [n_blocks * block_size], np.int64),
                                        "row_shape")])
    if n_blocks * block_size != k:
        rows = builder.op("Slice", [rows, const(np.array([0], np.int64), "row_start"),
                                    const(np.array([k], np.int64), "row_stop"),
                                    const(np.array([-1], np.int64), "row_axes")])
    return rows


def _unpack(builder: Builder, packed: ir.Value, bits: int, const, shape: list[int]
            ) -> ir.Value:
    """uint8 bytes ``[..., m]`` -> int32 codes reshaped to ``shape`` (two 4-bit codes per
    byte, the first in the low bits)."""
    wide = builder.op("Cast", [packed], {"to": ir.DataType.INT32})
    if bits == 8:
        return builder.op("Reshape", [wide, const(np.array(shape, np.int64), "shape8")])
    sixteen = const(np.array(16, np.int32), "sixteen")
    high = builder.op("Div", [wide, sixteen])
    low = builder.op("Sub", [wide, builder.op("Mul", [high, sixteen])])
    last = const(np.array([-1], np.int64), "pair_axis")
    pairs = builder.op("Concat", [builder.op("Unsqueeze", [low, last]),
                                  builder.op("Unsqueeze", [high, last])], {"axis": -1})
    return builder.op("Reshape", [pairs, const(np.array(shape, np.int64), "shape4")])
