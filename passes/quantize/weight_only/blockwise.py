"""Blocked n-bit weight quantization in numpy, for ``weight-only``: round-to-nearest, GPTQ,
and ONNX Runtime's ``MatMulNBits`` packing.

A weight is handled as ``[N, K]`` (output channels x input features) and quantized in blocks
of ``block_size`` consecutive input features of one output channel (one block per channel
when per channel). Each block gets its own scale and zero point, chosen as
``quant_math.params_from_range`` chooses them for 8 bits, generalised to ``bits``:

- symmetric: int4 takes all 16 levels [-8, 7], zero point 0 (int8 keeps [-127, 127], as
  ``quant_math`` and TensorRT do; one level in 255 is worth nothing). With ``signed_scale``
  (MatMulNBits, whose scales may be negative) the block's value of largest magnitude maps
  to -8 exactly (``scale = v / -8``, negative when v > 0), as ONNX Runtime's quantizer
  does; otherwise ``scale = max(-lo / 8, hi / 7)`` (positive, what DequantizeLinear
  consumers such as TensorRT want);
- asymmetric: levels ``[0, 2**bits - 1]``, the block's range widened to include 0,
  ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = clip(rint(-lo / scale))``;
- scales never go below ``quant_math.MIN_SCALE`` (an all-zero block stays exact).

Rounding and dequantization are ``quant_math.quantize`` / ``quant_math.dequantize`` (ONNX
QuantizeLinear / DequantizeLinear, bit for bit): ``Blocked.dequantize()`` is exactly the
float weight ONNX Runtime's DequantizeLinear (or MatMulNBits' dequantization) computes from
the stored levels. A ``K`` that is not a multiple of the block size leaves the last block
shorter; 0 is a level, so padding a block with zeros does not change its scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from onnxpress.ir import quant_math

__all__ = ["Blocked", "GptqFactor", "blocks", "fake_quantize", "gptq", "gptq_factor", "levels",
           "pack_matmul_nbits", "params", "quantize_rows", "round_to_nearest", "with_params"]
MIN_SCALE = quant_math.MIN_SCALE
#: (block [N, size] as updated so far, its first column) -> (scale [N], zero point [N])
Chooser = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def levels(bits: int, symmetric: bool) -> tuple[int, int, np.dtype]:
    """(qmin, qmax, dtype the levels are held in): int8 when symmetric, else uint8."""
    if symmetric and bits == 8:  # quant_math's int8 weights: [-127, 127], TensorRT's too
        return -127, 127, np.dtype(np.int8)
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1, np.dtype(np.int8)
    return 0, 2**bits - 1, np.dtype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A weight ``[N, K]`` quantized block-wise along K.

    ``q``: ``[N, K]`` levels (int8 when symmetric, uint8 when asymmetric); ``scale``:
    ``[N, n_blocks]`` float32; ``zero_point``: ``[N, n_blocks]``, q's dtype (0 when
    symmetric); ``block_size``: the block length along K (K itself per channel)."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    block_size: int
    symmetric: bool

    @property
    def n_blocks(self) -> int:
        return int(self.scale.shape[1])

    def padded(self, width: int | None = None) -> np.ndarray:
        """``q`` padded along K to ``n_blocks * block_size`` (or ``width``) with each block's
        zero point, the level that dequantizes to 0."""
        n, k = self.q.shape
        width = width or self.n_blocks * self.block_size
        fill = np.repeat(self.zero_point, self.block_size, axis=1)[:, :width]
        if fill.shape[1] < width:  # per channel, padded to a larger power of two
            fill = np.pad(fill, ((0, 0), (0, width - fill.shape[1])), mode="edge")
        out = fill.copy()
        out[:, :k] = self.q
        return out

    def dequantize(self) -> np.ndarray:
        """The float32 ``[N, K]`` weight DequantizeLinear computes from q, scale, zero point."""
        n, k = self.q.shape
        blocks = self.padded().reshape(n * self.n_blocks, self.block_size)
        x = quant_math.dequantize(blocks, self._params())
        return x.reshape(n, -1)[:, :k]

    def _params(self) -> quant_math.QuantParams:
        return quant_math.QuantParams(self.scale.reshape(-1), self.zero_point.reshape(-1), 0)


def params(
    lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool, signed_scale: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point per entry of ``lo``/``hi``: ``params_from_range``'s
    formula on ``bits``-bit levels (it is only defined for 8-bit dtypes); symmetric, as the
    module says."""
    qmin, qmax, dtype = levels(bits, symmetric)
    lo64 = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi64 = np.maximum(np.asarray(hi, np.float64), 0.0)
    if symmetric and signed_scale and qmin < -qmax:
        extreme = np.where(hi64 > -lo64, hi64, lo64)
        size = np.maximum(np.abs(extreme) / -qmin, quant_math.MIN_SCALE)
        scale = np.where(extreme > 0, -size, size)
        return scale.astype(np.float32), np.zeros(scale.shape, dtype)
    if symmetric:
        scale = np.maximum(np.maximum(-lo64 / -qmin, hi64 / qmax), quant_math.MIN_SCALE)
        return scale.astype(np.float32), np.zeros(scale.shape, dtype)
    scale = np.maximum((hi64 - lo64) / (qmax - qmin), quant_math.MIN_SCALE).astype(np.float32)
    zero = np.clip(np.rint(qmin - lo64 / scale.astype(np.float64)), qmin, qmax)
    return scale, zero.astype(dtype)


def quantize_rows(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int,
                  symmetric: bool) -> np.ndarray:
    """QuantizeLinear of ``x`` (rows along axis 0 get one scale each), saturated to the
    ``bits``-bit levels."""
    qmin, qmax, dtype = levels(bits, symmetric)
    q = quant_math.quantize(x, quant_math.QuantParams(scale, zero, 0))
    return np.clip(q, qmin, qmax).astype(dtype)


def blocks(w: np.ndarray, size: int) -> np.ndarray:
    """``[N, K]`` -> ``[N, n_blocks, size]``, the last block zero-padded."""
    n, k = w.shape
    width = -(-k // size) * size
    return np.pad(w, ((0, 0), (0, width - k))).reshape(n, width // size, size)


def round_to_nearest(w: np.ndarray, *, bits: int, block_size: int, symmetric: bool,
                     signed_scale: bool = False) -> Blocked:
    """Round-to-nearest of ``w [N, K]`` in blocks of ``block_size`` along K (0: one block
    per output channel)."""
    w = np.asarray(w, np.float32)
    size = block_size or w.shape[1]
    split = blocks(w, size)
    scale, zero = params(split.min(axis=2), split.max(axis=2), bits, symmetric, signed_scale)
    return with_params(w, scale, zero, bits=bits, block_size=size, symmetric=symmetric)


def with_params(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, *, bits: int,
                block_size: int, symmetric: bool) -> Blocked:
    """``w [N, K]`` rounded to nearest on the given ``[N, n_blocks]`` block parameters."""
    n, k = w.shape
    q = quantize_rows(blocks(w, block_size).reshape(-1, block_size), scale.reshape(-1),
                  zero.reshape(-1), bits, symmetric)
    return Blocked(q.reshape(n, -1)[:, :k], scale, zero, bits, block_size, symmetric)


def fake_quantize(split: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int,
                  symmetric: bool) -> np.ndarray:
    """Blocks ``[N, n_blocks, size]`` quantized on ``[N, n_blocks]`` parameters and back,
    in float32, as the runtime dequantizes them."""
    n, nb, size = split.shape
    flat_scale, flat_zero = scale.reshape(-1), zero.reshape(-1)
    q = quantize_rows(split.reshape(-1, size), flat_scale, flat_zero, bits, symmetric)
    restored = quant_math.dequantize(q, quant_math.QuantParams(flat_scale, flat_zero, 0))
    return restored.reshape(n, nb, size)


@dataclasses.dataclass(frozen=True)
class GptqFactor:
    """What GPTQ needs from the inputs' ``H = X^T X / n``, shared by every weight reading the
    same input: ``u``, the upper Cholesky factor of the damped ``H^-1`` (``H^-1 = U^T U``),
    padded to whole blocks; ``dead``, the input features never active (``H[i, i] == 0``)."""

    u: np.ndarray
    dead: np.ndarray


def gptq_factor(hessian: np.ndarray, *, block_size: int, damp: float = 0.01) -> GptqFactor:
    """The factor of ``hessian [K, K]`` (K padded to whole blocks: padding is dead); dead
    inputs get ``H[i, i] = 1``, then ``damp * mean(diag H)`` is added to the diagonal."""
    k = hessian.shape[0]
    size = block_size or k
    width = -(-k // size) * size
    h = np.zeros((width, width))
    h[:k, :k] = hessian
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices(width)] += damp * float(np.mean(np.diag(h)))
    return GptqFactor(np.linalg.cholesky(np.linalg.inv(h)).T, dead)


def gptq(
    w: np.ndarray,
    factor: GptqFactor,
    *,
    bits: int,
    block_size: int,
    symmetric: bool,
    signed_scale: bool = False,
    lazy: int = 128,
    choose: Chooser | None = None,
) -> Blocked:
    """GPTQ (Frantar et al., 2023) of ``w [N, K]`` against its inputs' ``factor``: columns
    are quantized in order, and each column's rounding error is spread over the columns not
    yet quantized (``w[:, j:] -= err_i * U[i, j:] / U[i, i]``), which minimises
    ``||X W^T - X Q^T||`` column by column. A block's scale is chosen when its first column
    is reached, from the block as updated so far; per channel, from the whole weight up
    front; ``choose(block, first_column)``, where given, picks a block's ``(scale,
    zero_point)`` instead of its min-max range. Dead inputs get a zero weight. Updates are
    applied lazily in batches of ``lazy`` columns (rounded to whole blocks), which gives the
    same result as column by column."""
    w = np.asarray(w, np.float64)
    n, k = w.shape
    size = block_size or k
    width = factor.u.shape[0]
    nb = width // size
    weight = np.zeros((n, width))
    weight[:, :k] = w
    weight[:, factor.dead] = 0.0
    _, _, dtype = levels(bits, symmetric)
    scale = np.empty((n, nb), np.float32)
    zero = np.empty((n, nb), dtype)
    q = np.empty((n, width), dtype)
    if not block_size:
        scale[:, 0], zero[:, 0] = params(weight.min(axis=1), weight.max(axis=1), bits,
                                          symmetric, signed_scale)
    step = size * max(1, lazy // size) if block_size else lazy
    for start in range(0, width, step):
        stop = min(start + step, width)
        _gptq_batch(weight, factor.u, q, scale, zero, start, stop, bits,
                    size if block_size else 0, symmetric, signed_scale, choose)
    return Blocked(q[:, :k], scale, zero, bits, size, symmetric)


def _gptq_batch(weight: np.ndarray, u: np.ndarray, q: np.ndarray, scale: np.ndarray,
                zero: np.ndarray, start: int, stop: int, bits: int, block_size: int,
                symmetric: bool, signed_scale: bool, choose: Chooser | None) -> None:
    """Columns ``start:stop`` of GPTQ, then their error pushed onto the columns after them."""
    part = weight[:, start:stop].copy()
    errors = np.zeros_like(part)
    for j in range(stop - start):
        col = start + j
        group = col // block_size if block_size else 0
        if block_size and col % block_size == 0:
            block = part[:, j : j + block_size]
            scale[:, group], zero[:, group] = choose(block, col) if choose else params(
                block.min(axis=1), block.max(axis=1), bits, symmetric, signed_scale)
        s, z = scale[:, group], zero[:, group]
        q[:, col] = quantize_rows(part[:, j], s, z, bits, symmetric)
        restored = quant_math.dequantize(q[:, col], quant_math.QuantParams(s, z, 0))
        err = (part[:, j] - restored) / u[col, col]
        part[:, j:] -= np.outer(err, u[col, col:stop])
        errors[:, j] = err
    weight[:, stop:] -= errors @ u[start:stop, stop:]


def pack_matmul_nbits(
    blocked: Blocked, block_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``MatMulNBits`` inputs B, scales, zero_points from ``blocked`` (``block_size``: the
    operator's block, a power of two >= 16, equal to ``blocked.block_size`` or, per channel,
    the one block covering K).

    B: uint8 ``[N, n_blocks, block_size * bits / 8]``, unsigned codes packed low bits first
    along K; symmetric levels are shifted by ``2**(bits-1)``, the operator's default zero
    point, and zero_points is None. Asymmetric: zero_points uint8, packed the same way,
    ``[N * ceil(n_blocks * bits / 8)]``. scales: float32 ``[N * n_blocks]``. K is padded to
    whole blocks with the zero point's code (it dequantizes to 0)."""
    n = blocked.q.shape[0]
    nb = blocked.n_blocks
    offset = 2 ** (blocked.bits - 1) if blocked.symmetric else 0
    codes = (blocked.padded(nb * block_size).astype(np.int16) + offset).astype(np.uint8)
    b = _pack(codes, blocked.bits).reshape(n, nb, block_size * blocked.bits // 8)
    scales = np.ascontiguousarray(blocked.scale.reshape(-1), np.float32)
    if blocked.symmetric:
        return b, scales, None
    return b, scales, _pack(blocked.zero_point.astype(np.uint8), blocked.bits).reshape(-1)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Rows of uint8 codes packed ``8 // bits`` to a byte, the first in the low bits; a row
    of odd length (4-bit zero points) is padded with 0."""
    if bits == 8:
        return np.ascontiguousarray(codes, np.uint8)
    assert bits == 4
    if codes.shape[1] % 2:
        codes = np.pad(codes, ((0, 0), (0, 1)))
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
