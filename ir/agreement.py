"""How closely two runs of a model agree: the one definition of cosine similarity that the
budgets (quantize's sensitivity), ``compare``, ``--check`` and the TensorRT engine check
share, so that one zero-norm rule holds everywhere."""

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
