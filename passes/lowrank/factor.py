"""Truncated SVD of a layer's matrix ``W [outputs, features]``, plain or whitened.

Plain: ``W = U diag(s) V^T``; keeping ``r`` singular values minimises ``||W - W_r||_F``.

Whitened by the layer's input statistics ``H = E[x x^T]`` (activation-aware, SVD-LLM's
form): with ``S`` the Cholesky factor of ``H + damp * mean(diag H) * I`` (``S S^T``, lower
triangular), the SVD of ``W S = U diag(s) V^T``, truncated, and the whitening undone:
``W_r = (U_r diag(s_r)) (V_r^T S^-1)``, which minimises ``E||W x - W_r x||^2`` on the
calibration data: the output error, not the weight error (any ``S`` with ``S S^T = H`` gives
the same ``W_r``; Cholesky is the cheapest). Then ``s`` measures output energy, so the tail
``sum(s[r:]^2) / sum(s^2)`` is the relative squared output error of rank ``r``, which is
what rank selection reads. The damping keeps ``S^-1`` bounded where the data never reached
(fewer calibration rows than features) and pulls those directions toward the plain SVD's
choice; a Gram the factorisation still refuses falls back to its eigendecomposition. The
same function fits an error branch (EoRA): pass the weight error ``W - W_q`` as the matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

DAMP = 1e-2


@dataclasses.dataclass
class Spectrum:
    """``matrix = left @ diag(values) @ right`` exactly (float64), values descending."""

    left: np.ndarray  # [outputs, R]
    values: np.ndarray  # [R]
    right: np.ndarray  # [R, features]: V^T S^-1 (V^T when plain)

    @property
    def energy(self) -> np.ndarray:
        """``sum(values[r:]^2) / sum(values^2)`` for r = 0..R: the relative squared error
        of keeping r values (the last entry is 0)."""
        return tail(self.values)

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """``(B [outputs, rank], A [rank, features])`` with ``B @ A`` the rank-``rank``
        truncation; the singular values split evenly between them (balanced magnitudes
        for float32)."""
        root = np.sqrt(self.values[:rank])
        return self.left[:, :rank] * root, root[:, None] * self.right[:rank]


def tail(values: np.ndarray) -> np.ndarray:
    """``sum(values[r:]^2) / sum(values^2)`` for r = 0..len(values)."""
    squares = np.asarray(values, np.float64) ** 2
    tails = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])
    return tails / max(float(squares.sum()), 1e-300)


def decompose(matrix: np.ndarray, gram: np.ndarray | None = None,
              damp: float = DAMP) -> Spectrum:
    """The spectrum of ``matrix`` ``[outputs, features]``; whitened by ``gram`` (``H``,
    ``[features, features]``) when given."""
    matrix = np.asarray(matrix, np.float64)
    if gram is None:
        left, values, right = np.linalg.svd(matrix, full_matrices=False)
        return Spectrum(left, values, right)
    root, undo = whitening(gram, damp)
    left, values, right = np.linalg.svd(matrix @ root, full_matrices=False)
    return Spectrum(left, values, undo(right))


def singular_values(matrix: np.ndarray, gram: np.ndarray | None = None,
                    damp: float = DAMP) -> np.ndarray:
    """``decompose(...).values`` without the singular vectors (rank selection's input)."""
    matrix = np.asarray(matrix, np.float64)
    if gram is not None:
        matrix = matrix @ whitening(gram, damp)[0]
    return np.linalg.svd(matrix, compute_uv=False)


def whitening(gram: np.ndarray, damp: float = DAMP
              ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``S`` with ``S S^T = H + damp * mean(diag H) * I`` and ``rows -> rows S^-1``."""
    gram = np.asarray(gram, np.float64)
    gram = gram + damp * max(float(np.mean(np.diag(gram))), 1e-30) * np.eye(len(gram))
    try:
        lower = np.linalg.cholesky(gram)
        return lower, lambda rows: np.linalg.solve(lower.T, rows.T).T
    except np.linalg.LinAlgError:
        eigen, basis = np.linalg.eigh(gram)
        root = np.sqrt(np.maximum(eigen, eigen.max() * 1e-12))
        return basis * root, lambda rows: (rows / root) @ basis.T
