"""Quantization math the passes share: scales and zero points, and numpy twins of ONNX's
QuantizeLinear / DequantizeLinear.

``quantize`` and ``dequantize`` are bit-identical to the ONNX operators (as ONNX Runtime's CPU
kernels and ``onnx.reference`` compute them): ``q = saturate(round_half_even(x / scale) + zp)``
with the division in float32, and ``x = float32(q - zp) * scale``, broadcasting a 1-D scale
along ``axis``. Passes fold weights with them, so a folded constant equals what the runtime
would have computed from the QDQ pair.

Parameter choices, and why:

- The range always includes 0 and the zero point is an integer in the target range, so 0.0
  quantizes exactly (ONNX Runtime pads with the zero point; ReLU zeros and padding must not
  drift).
- Symmetric int8 uses the restricted range [-127, 127] with zero point 0 (what TensorRT
  expects; it also makes ``-q`` representable). Symmetric uint8 is the same grid shifted:
  zero point 128, levels [1, 255].
- Scales never go below ``MIN_SCALE`` (float32 epsilon, PyTorch's observer floor): a zero-width
  range (an all-zero channel, a dead activation) gets a small positive scale instead of 0,
  inf or nan, and ``input_scale * weight_scale`` for a bias stays a normal float.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

QuantDtype = Literal["uint8", "int8"]

#: the smallest scale ``params_from_range`` returns (2**-23)
MIN_SCALE = float(np.finfo(np.float32).eps)

_INT32 = np.iinfo(np.int32)


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Scale and zero point of one QuantizeLinear / DequantizeLinear.

    ``scale`` is float32, 0-d (per tensor) or 1-D (per channel along ``axis``);
    ``zero_point`` has the same shape and the target integer dtype; ``axis`` is None per
    tensor."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.zero_point.dtype


def quant_range(dtype: QuantDtype | np.dtype | type, *, symmetric: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of the levels a range is mapped onto; symmetric int8 is restricted to
    [-127, 127] and symmetric uint8 to [1, 255]."""
    info = np.iinfo(np.dtype(dtype))
    if info.bits != 8:
        raise ValueError(f"activations and weights quantize to uint8 or int8, not {dtype}")
    low = info.min + 1 if symmetric else info.min
    return int(low), int(info.max)


def params_from_range(
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    *,
    dtype: QuantDtype,
    symmetric: bool,
    axis: int | None = None,
) -> QuantParams:
    """Scale and zero point that map [lo, hi] (widened to include 0) onto the target levels.

    ``lo`` and ``hi`` are scalars, or 1-D arrays (one entry per channel along ``axis``)."""
    lo64 = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi64 = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    if lo64.shape != hi64.shape or lo64.ndim > 1:
        raise ValueError(f"lo {lo64.shape} and hi {hi64.shape}: need equal scalars or 1-D arrays")
    if (lo64.ndim == 1) != (axis is not None):
        raise ValueError("give axis exactly when lo and hi are per-channel (1-D)")
    if not (np.all(np.isfinite(lo64)) and np.all(np.isfinite(hi64))):
        raise ValueError("the range must be finite")
    qmin, qmax = quant_range(dtype, symmetric=symmetric)
    if symmetric:
        absmax = np.maximum(-lo64, hi64)
        scale = _floor_scale(absmax / ((qmax - qmin) / 2))
        zero = np.full(scale.shape, (qmin + qmax + 1) // 2, dtype=np.int64)  # 0, or 128
    else:
        scale = _floor_scale((hi64 - lo64) / (qmax - qmin))
        zero = np.clip(np.rint(qmin - lo64 / scale.astype(np.float64)), qmin, qmax)
    return QuantParams(scale, zero.astype(np.dtype(dtype)), axis)


def _floor_scale(scale: np.ndarray) -> np.ndarray:
    return np.maximum(scale, MIN_SCALE).astype(np.float32)


def weight_params(
    w: np.ndarray,
    *,
    axis: int | None,
    dtype: QuantDtype = "int8",
    symmetric: bool = True,
) -> QuantParams:
    """Parameters from a weight's own min and max: per tensor (``axis=None``) or one pair per
    slice along ``axis`` (returned as a non-negative axis)."""
    w = np.asarray(w)
    if axis is None:
        return params_from_range(w.min(initial=0.0), w.max(initial=0.0), dtype=dtype,
                                 symmetric=symmetric)
    axis = _normalize_axis(axis, w.ndim)
    others = tuple(i for i in range(w.ndim) if i != axis)
    lo = w.min(axis=others, initial=0.0) if others else np.minimum(w, 0.0)
    hi = w.max(axis=others, initial=0.0) if others else np.maximum(w, 0.0)
    return params_from_range(lo, hi, dtype=dtype, symmetric=symmetric, axis=axis)


def _normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return axis % ndim


def _broadcast(values: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """A per-channel vector reshaped to broadcast along ``axis`` (as ONNX's per-axis ops do)."""
    if values.ndim == 0:
        return values
    if axis is None:
        raise ValueError("per-channel parameters need an axis")
    axis = _normalize_axis(axis, ndim)
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def quantize(x: np.ndarray, p: QuantParams) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), in float32."""
    x = np.asarray(x, dtype=np.float32)
    scale = _broadcast(np.asarray(p.scale, dtype=np.float32), x.ndim, p.axis)
    zero = _broadcast(np.asarray(p.zero_point), x.ndim, p.axis).astype(np.float32)
    info = np.iinfo(p.zero_point.dtype)
    # Clipping before adding the zero point keeps huge values and infinities off the int
    # conversion; for finite in-range values it is the same as adding, then saturating.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        steps = np.clip(np.rint(x / scale), info.min - zero, info.max - zero)
    return (steps + zero).astype(p.zero_point.dtype)


def dequantize(q: np.ndarray, p: QuantParams) -> np.ndarray:
    """ONNX DequantizeLinear: float32(q - zero_point) * scale (the difference in integers)."""
    q = np.asarray(q)
    scale = _broadcast(np.asarray(p.scale, dtype=np.float32), q.ndim, p.axis)
    zero = _broadcast(np.asarray(p.zero_point), q.ndim, p.axis)
    return (q.astype(np.int64) - zero.astype(np.int64)).astype(np.float32) * scale


def int32_bias(
    bias: np.ndarray, input_scale: float | np.ndarray, weight_scale: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A Conv/Gemm bias as int32 with scale ``input_scale * weight_scale`` (computed in
    float32, as the runtime's integer kernels assume), zero point 0, rounded half to even and
    clipped to int32. Returns (int32 bias, float32 scale: 0-d or one per output channel)."""
    scale = np.asarray(input_scale, dtype=np.float32) * np.asarray(weight_scale, dtype=np.float32)
    bias64 = np.asarray(bias, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.rint(bias64 / scale.astype(np.float64))
    steps = np.nan_to_num(steps, nan=0.0, posinf=_INT32.max, neginf=_INT32.min)
    return np.clip(steps, _INT32.min, _INT32.max).astype(np.int32), scale.astype(np.float32)


#: SmoothQuant factors stay in this range (the reference's floor of 1e-5, and its mirror)
SMOOTHING_RANGE = (1e-5, 1e5)


def smoothing_factors(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel factor ``s_j = act_max_j**alpha / weight_max_j**(1-alpha)``,
    clamped to ``SMOOTHING_RANGE``; 1 where either statistic is 0 (nothing to migrate)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.power(act_max, alpha) / np.power(weight_max, 1.0 - alpha)
    usable = (act_max > 0) & (weight_max > 0) & np.isfinite(s)
    return np.where(usable, np.clip(s, *SMOOTHING_RANGE), 1.0)
