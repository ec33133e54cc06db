"""SmoothQuant-style migration in front of the activation's QuantizeLinear.

SmoothQuant divides an activation ``x`` by a per-channel factor ``s`` and multiplies the rows
of the weights that read it by ``s``: ``x @ W = (x / s) @ (s * W)``, which flattens the
outlier channels of ``x`` (post-norm transformers have a few, 10-100x the others) at the
weights' expense, where per-column scales absorb them. The ``smooth`` pass folds ``1 / s``
into a LayerNorm; where it cannot (a LayerNorm output that also feeds a residual Add),
``quantize(smooth=alpha)`` puts it in front of the quantizer, on the quantized readers'
branch only:

    x -> Mul(1 / s) -> QuantizeLinear -> DequantizeLinear -> MatMul(s * W)

The Mul costs about what the QuantizeLinear does; folding ``1 / s`` into a per-axis
QuantizeLinear scale instead would be free in principle, but ONNX Runtime 1.31 runs per-axis
QuantizeLinear in a generic loop, 60 of DeiT-S's 130 ms. The budget's simulator models the
same arithmetic as a per-channel round trip at scales ``c * s`` (``Migration.quantizer``).
Factors: ``s_k = max|x_k| ** alpha / max|W_k| ** (1 - alpha)`` over every weight
that reads ``x``, clipped to [1e-5, 1e5] (``quant_math.smoothing_factors``, shared with
``smooth``); an activation is migrated only where that lowers
the estimated output noise of its layers (``_error``): on MiniLM it smooths the LayerNorm
outputs and leaves the GELU outputs, whose negative tail ``1 / s`` would stretch. Only for
activations that nothing but quantized MatMul-like layers (MatMul, Gemm, Attention with a
constant 2-D weight) read through the pair; their other readers keep the float ``x``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.passes.quantize.static.policy import Plan, Target

__all__ = ["Migration", "RowSample", "candidates", "migrations"]

#: factor bounds: beyond them a channel is dead or the weight row is all zero
_MATMUL_LIKE = ("MatMul", "Gemm", "Attention")


@dataclasses.dataclass(frozen=True, eq=False)
class Migration:
    """``x / factors`` is what the quantized layers read; their weights carry the factors."""

    factors: np.ndarray  # float32, one per channel of x's last axis

    def quantizer(self, p: quant_math.QuantParams) -> quant_math.QuantParams:
        """The per-channel QuantizeLinear parameters that quantize ``x / factors`` at ``p``."""
        scale = (np.float32(p.scale) * self.factors).astype(np.float32)
        return quant_math.QuantParams(scale, np.full(scale.shape, p.zero_point), axis=-1)

    def weight(self, array: np.ndarray, axis: int) -> np.ndarray:
        """``array`` (2-D, output channels on ``axis``) with its input rows times the factors."""
        contraction = 1 - axis
        shape = [1, 1]
        shape[contraction] = -1
        return (np.asarray(array, np.float32) * self.factors.reshape(shape)).astype(np.float32)


def candidates(chosen: Plan) -> dict[ir.Value, list[Target]]:
    """Activations whose every quantized reader takes them as the input of a constant 2-D
    weight, with the layers that read them."""
    readers: dict[ir.Value, list[Target]] = {}
    for target in chosen.targets:
        for value in target.activations:
            readers.setdefault(value, []).append(target)
    return {value: targets for value, targets in readers.items()
            if all(_contracts(value, t) for t in targets)}


def _contracts(value: ir.Value, target: Target) -> bool:
    node = target.node
    if node.op_type not in _MATMUL_LIKE or target.weight is None or target.axis is None:
        return False
    weight = constant_array(node.inputs[target.weight])
    return weight is not None and weight.ndim == 2 and node.inputs[0] is value


#: rows of each smoothed activation kept from each calibration batch (evenly spaced, so a
#: sequence's first token, where LLMs put their outliers, is among them) and in all
SAMPLE_ROWS, SAMPLE_CAP = 64, 256


class RowSample:
    """A few rows of an activation over the calibration batches (features on the last
    axis): what the migration's measured error runs on."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.count = 0

    def __call__(self, x: np.ndarray) -> None:
        if self.count >= SAMPLE_CAP:
            return
        rows = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        rows = rows[::max(1, len(rows) // SAMPLE_ROWS)][:min(SAMPLE_ROWS, SAMPLE_CAP - self.count)]
        self.parts.append(rows.copy())  # not a view that would keep the whole batch alive
        self.count += len(rows)

    def rows(self) -> np.ndarray | None:
        return np.concatenate(self.parts) if self.parts else None


def migrations(
    ranges: Mapping[ir.Value, tuple[np.ndarray, np.ndarray]],
    readers: Mapping[ir.Value, Iterable[Target]],
    alpha: float,
    samples: Mapping[ir.Value, RowSample] | None = None,
) -> dict[ir.Value, tuple[Migration, float, float]]:
    """Per activation with per-channel ``ranges`` (lo, hi): its migration and the smoothed
    tensor's per-tensor (lo, hi), where migrating lowers the layers' output error: measured
    on the activation's sampled rows where ``samples`` has them (``_measured``), else
    estimated from the ranges alone (``_error``). (Choosing each activation's alpha by its
    layers' measured error instead, the best of alpha and alpha +- 0.1, made SmolLM2 worse:
    perplexity 43.80 -> 44.48; the layer error is not the model's.)"""
    found = {}
    for value, (lo, hi) in ranges.items():
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        weights = _weights(readers[value], lo.shape)
        if weights is None:
            continue  # a weight does not contract x's last axis
        act = np.maximum(-lo, hi)
        row_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        rows = None if samples is None or value not in samples else samples[value].rows()
        if rows is None:
            error = functools.partial(_error, lo, hi, weights)
        else:
            error = functools.partial(_measured, rows, lo, hi, weights)
        factors = quant_math.smoothing_factors(act, row_max, alpha)
        if error(factors) < error(np.ones_like(factors)):
            factors = factors.astype(np.float32)
            found[value] = (Migration(factors), float(np.min(lo / factors)),
                            float(np.max(hi / factors)))
    return found


def _weights(targets: Iterable[Target], shape: tuple[int, ...]) -> list[np.ndarray] | None:
    """The readers' weights as [K, N] float64 arrays, K along ``shape``; None on a mismatch."""
    weights = []
    for target in targets:
        array = constant_array(target.node.inputs[target.weight])
        assert array is not None and target.axis is not None
        array = np.asarray(array, np.float64)
        array = array if target.axis == 1 else array.T
        if array.shape[:1] != shape:
            return None
        weights.append(array)
    return weights


def _error(lo: np.ndarray, hi: np.ndarray, weights: list[np.ndarray],
           factors: np.ndarray) -> float:
    """Estimated output noise power of uint8 activations x int8 per-column weights after
    migrating ``factors``: activation steps through the scaled weights plus weight steps
    through the scaled activations (channel abs-max standing in for its RMS)."""
    step = (np.max(hi / factors) - min(np.min(lo / factors), 0.0)) / 255
    act = np.maximum(-lo, hi) / factors
    total = 0.0
    for w in weights:
        scaled = w * factors[:, None]
        weight_step = np.abs(scaled).max(axis=0) / 127
        total += step**2 * np.sum(scaled**2) + np.sum(weight_step**2) * np.sum(act**2)
    return float(total)


def _measured(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, weights: list[np.ndarray],
              factors: np.ndarray) -> float:
    """The readers' squared output error on ``rows`` with ``x / factors`` quantized per
    tensor (uint8, over the calibrated range) and ``factors * W`` per column (int8), the
    round trips the runtime makes. The estimate from ranges alone takes a channel's
    abs-max for its RMS, which an LLM's few huge channels make useless: on SmolLM2 it
    refused 31 of 120 migrations that lower the error (int8 perplexity at alpha 0.8:
    +6.7% estimated, +5.1% measured)."""
    scaled = rows / factors.astype(np.float32)
    p = quant_math.params_from_range(float(np.min(lo / factors)), float(np.max(hi / factors)),
                                     dtype="uint8", symmetric=False)
    x = quant_math.dequantize(quant_math.quantize(scaled, p), p).astype(np.float32)
    total = 0.0
    for w in weights:
        moved = (w * factors[:, None]).astype(np.float32)
        wp = quant_math.weight_params(moved, axis=1, dtype="int8", symmetric=True)
        wq = quant_math.dequantize(quant_math.quantize(moved, wp), wp).astype(np.float32)
        total += float(np.sum((rows @ w.astype(np.float32) - x @ wq) ** 2))
    return total


def fold_into_norm(value: ir.Value, migration: Migration) -> bool:
    """Divide the LayerNormalization producing ``value`` by the factors (its scale and bias,
    constants read by it alone), so that no Mul is needed; only when nothing else reads
    ``value``. False, with nothing changed, otherwise."""
    node = value.producer()
    if (node is None or node.op_type != "LayerNormalization" or node.domain != ""
            or value.is_graph_output() or len(node.inputs) < 2):
        return False
    constants = [v for v in node.inputs[1:3] if v is not None]
    arrays = [constant_array(v) for v in constants]
    if any(a is None or a.shape != migration.factors.shape or len(list(v.uses())) != 1
           or v.const_value is None for v, a in zip(constants, arrays)):
        return False
    for v, a in zip(constants, arrays):
        assert a is not None
        v.const_value = ir.tensor((a / migration.factors).astype(a.dtype), name=v.name)
    return True
