"""How closely two runs of a model agree: the one definition of cosine similarity that the
budgets (quantize's sensitivity), ``compare``, ``--check`` and the TensorRT engine check
share, so that one zero-norm rule holds everywhere; and the one max-difference measure
(``--check``, the opset upgrade's verification)."""

from __future__ import annotations

import numpy as np


def sample_cosines(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine per sample (first axis; all of it when the rank is < 2); exactly 1 where the two
    are equal (zeros included), so that an all-float model meets a budget of 0; 0 where one
    side has no direction (a zero or non-finite norm) and they differ."""
    a = np.asarray(reference, np.float64)
    b = np.asarray(output, np.float64)
    a = a.reshape(len(a), -1) if a.ndim >= 2 else a.reshape(1, -1)
    b = b.reshape(a.shape)
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(norms > 0, dot / norms, 0.0)
    return np.where(np.all(a == b, axis=1), 1.0, np.nan_to_num(cosine))


def cosine(reference: np.ndarray, output: np.ndarray) -> float:
    """The cosine of the two tensors as flat vectors (same rules)."""
    a = np.asarray(reference).reshape(1, -1)
    return float(sample_cosines(a, np.asarray(output).reshape(1, -1))[0])


def paired(reference: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as flat float64, with NaN where both are NaN counted as equal (zero)."""
    a = np.asarray(reference).astype(np.float64).ravel()
    b = np.asarray(output).astype(np.float64).ravel()
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, a), np.where(both_nan, 0, b)


def max_difference(reference: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """(max |a-b|, max |a|): the largest difference and the output's scale (``paired``);
    non-numeric tensors give (0 or 1, 1) by equality."""
    ref = np.asarray(reference)
    if not np.issubdtype(ref.dtype, np.number) and ref.dtype != np.bool_:
        return (0.0 if np.array_equal(ref, output) else 1.0), 1.0
    a, b = paired(ref, output)
    if not a.size:
        return 0.0, 0.0
    return float(np.abs(a - b).max()), float(np.abs(a).max())


def within(reference: np.ndarray, output: np.ndarray, *, rtol: float, atol: float) -> bool:
    """max |a-b| <= atol + rtol x max |a|: ``numpy.allclose`` on the tensor's scale, so that
    float rounding of a tiny-magnitude output passes and a large one keeps its rtol."""
    diff, scale = max_difference(reference, output)
    return bool(np.isfinite(diff) and diff <= atol + rtol * scale)
