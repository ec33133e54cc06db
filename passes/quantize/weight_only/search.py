"""Better-than-round-to-nearest block parameters for ``weight-only``, in numpy.

- :func:`clip_search`: each block's range is shrunk by the factor, among ``grid`` from 1 down
  to ``lowest``, that minimises the block's squared rounding error, each input feature's
  error weighted by ``importance`` (the mean square of that feature's activations, from the
  calibration data: the part of ``||X W^T - X Q^T||^2`` a block can change when the
  features are uncorrelated; all ones without data). Clipping a few outliers buys a finer
  step for the rest; with activations, the features that carry the signal get the step.
- :func:`refine`: in the spirit of HQQ (Badri and Shaji, 2023), alternate between the levels
  and the block parameters: given the levels, the scale (and integer zero point) that
  minimise the block's weighted squared error in closed form (weighted least squares of
  ``w ~ scale * (q - zero)``); given those, the levels again. A block keeps its best
  parameters, so it never gets worse. With activation weights this is what moves
  SmolLM2-135M's int4 block-128 perplexity most (see the pass's docstring).
- :func:`activation_scales`: AWQ (Lin et al., 2024) in spirit: a per-input-feature scale
  ``s = rms(x)**alpha`` multiplies the weight columns before quantization and divides the
  activations (folded into the op before, or one ``Mul``), so features with large
  activations get more of the grid; ``alpha`` is searched per group of weights that read
  the same activations, by the output error ``tr(D H D^T)`` with ``D = W - Q(W s) / s`` and
  ``H = X^T X / n`` from the calibration data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from onnxpress.passes.quantize.weight_only import blockwise

__all__ = ["activation_scales", "clip_search", "refine"]


def clip_search(w: np.ndarray, *, bits: int, block_size: int, symmetric: bool,
                signed_scale: bool = False, importance: np.ndarray | None = None,
                grid: int = 20, lowest: float = 0.5) -> blockwise.Blocked:
    """``w [N, K]`` quantized block-wise with each block's range shrunk by its best factor
    (1 is among them: never worse than round to nearest on the weighted error)."""
    w = np.asarray(w, np.float32)
    n, k = w.shape
    size = block_size or k
    blocks = blockwise.blocks(w, size)  # [N, nb, size]
    weight = np.ones(blocks.shape[1:], np.float32) if importance is None else \
        blockwise.blocks(np.asarray(importance, np.float32)[None, :], size)[0]
    lo, hi = blocks.min(axis=2), blocks.max(axis=2)
    best_error = best_scale = best_zero = None
    for factor in np.linspace(1.0, lowest, grid):
        scale, zero = blockwise.params(lo * factor, hi * factor, bits, symmetric, signed_scale)
        restored = blockwise.fake_quantize(blocks, scale, zero, bits, symmetric)
        error = (np.square(blocks - restored) * weight).sum(axis=2)
        if best_error is None:
            best_error, best_scale, best_zero = error, scale, zero
            continue
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
    assert best_scale is not None and best_zero is not None
    return blockwise.with_params(w, best_scale, best_zero, bits=bits, block_size=size,
                                 symmetric=symmetric)


def activation_scales(weights: Sequence[np.ndarray], gram: np.ndarray,
                      quantize: Callable[[np.ndarray], np.ndarray], *,
                      grid: int = 11) -> tuple[np.ndarray, float]:
    """(``s [K]``, alpha) for weights ``[N_i, K]`` that read the same activations with
    second moments ``gram [K, K]``; ``quantize(w)`` returns the float weight the runtime
    would compute. alpha 0 (s = 1) is among the candidates."""
    rms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    live = rms > 0
    if not live.any():
        return np.ones(len(rms), np.float32), 0.0
    floor = rms[live].min()
    rms = np.where(live, rms, floor).astype(np.float64)
    h = gram.astype(np.float32)
    best: tuple[float, np.ndarray, float] | None = None
    for alpha in np.linspace(0.0, 1.0, grid):
        s = rms**alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        error = 0.0
        for w in weights:
            d = w - quantize(w * s) / s
            error += float(np.einsum("nk,nk->", d @ h, d))
        if best is None or error < best[0]:
            best = (error, s, float(alpha))
    assert best is not None
    return best[1], best[2]


def refine(w: np.ndarray, blocked: blockwise.Blocked, *, signed_scale: bool = False,
           importance: np.ndarray | None = None, iterations: int = 4) -> blockwise.Blocked:
    """``blocked`` (a quantization of ``w [N, K]``) with each block's scale and zero point
    refitted to its levels by weighted least squares, ``iterations`` times."""
    w = np.asarray(w, np.float32)
    bits, size, symmetric = blocked.bits, blocked.block_size, blocked.symmetric
    qmin, qmax, _ = blockwise.levels(bits, symmetric)
    split = blockwise.blocks(w, size).astype(np.float64)
    weight = np.ones(split.shape[1:]) if importance is None else \
        blockwise.blocks(np.asarray(importance, np.float32)[None, :], size)[0].astype(np.float64)
    weight = weight[None] * (np.arange(split.shape[1] * size).reshape(split.shape[1:]) <
                             w.shape[1])  # padding weighs nothing
    scale, zero = blocked.scale, blocked.zero_point
    best_error = _error(split, weight, scale, zero, bits, symmetric)
    total = weight.sum(axis=2)
    for _ in range(iterations):
        q = _levels(split, scale, zero, bits, symmetric)
        if symmetric:
            fitted_zero = np.zeros_like(scale, np.float64)
        else:  # w ~ a q + b, then the zero point -b / a rounded to a level
            mean_q = (weight * q).sum(axis=2) / np.maximum(total, 1e-30)
            mean_w = (weight * split).sum(axis=2) / np.maximum(total, 1e-30)
            cov = (weight * (q - mean_q[..., None]) * (split - mean_w[..., None])).sum(axis=2)
            var = (weight * np.square(q - mean_q[..., None])).sum(axis=2)
            slope = np.where(var > 0, cov / np.maximum(var, 1e-30), scale)
            slope = np.where(np.abs(slope) > 0, slope, scale)
            fitted_zero = np.clip(np.rint(mean_q - mean_w / slope), qmin, qmax)
        centred = q - fitted_zero[..., None]
        norm = (weight * np.square(centred)).sum(axis=2)
        fitted = (weight * split * centred).sum(axis=2) / np.maximum(norm, 1e-30)
        usable = (norm > 0) & (np.abs(fitted) >= blockwise.MIN_SCALE) & (
            signed_scale | (fitted > 0))
        new_scale = np.where(usable, fitted, scale).astype(np.float32)
        new_zero = np.where(usable, fitted_zero, zero).astype(zero.dtype)
        error = _error(split, weight, new_scale, new_zero, bits, symmetric)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        scale = np.where(better, new_scale, scale)
        zero = np.where(better, new_zero, zero)
    return blockwise.with_params(w, scale, zero, bits=bits, block_size=size,
                                 symmetric=symmetric)


def _levels(split: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int,
            symmetric: bool) -> np.ndarray:
    n, nb, size = split.shape
    q = blockwise.quantize_rows(split.reshape(-1, size).astype(np.float32), scale.reshape(-1),
                                zero.reshape(-1), bits, symmetric)
    return q.reshape(n, nb, size).astype(np.float64)


def _error(split: np.ndarray, weight: np.ndarray, scale: np.ndarray, zero: np.ndarray,
           bits: int, symmetric: bool) -> np.ndarray:
    restored = blockwise.fake_quantize(split.astype(np.float32), scale, zero, bits, symmetric)
    return (weight * np.square(split - restored)).sum(axis=2)
