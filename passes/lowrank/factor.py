"""Truncated SVD of a layer's matrix ``W [outputs, features]``, plain or whitened.

Plain: ``W = U diag(s) V^T``; keeping ``r`` singular values minimises ``||W - W_r||_F``.

Whitened by the layer's input statistics ``H = E[x x^T] = S S^T`` (activation-aware, as in
ASVD / SVD-LLM): the SVD of ``W S`` instead, and ``W_r = U_r diag(s_r) V_r^T S^-1``, which
minimises ``E||W x - W_r x||^2`` on the calibration data: the output error, not the weight
error. Then ``s`` measures output energy, so the tail ``sum(s[r:]^2) / sum(s^2)`` is the
relative squared output error of rank ``r``, which is what rank selection reads. ``S`` comes
from the eigendecomposition of ``H + damp * mean(diag H) * I``: the damping keeps ``S^-1``
bounded where the data never reached (fewer calibration rows than features) and pulls
those directions toward the plain SVD's choice. The same function fits an error branch
(EoRA): pass the weight error ``W - W_q`` as the matrix.
"""

from __future__ import annotations

import dataclasses

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
        squares = self.values**2
        tail = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])
        return tail / max(float(squares.sum()), 1e-300)

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """``(B [outputs, rank], A [rank, features])`` with ``B @ A`` the rank-``rank``
        truncation; the singular values split evenly between them (balanced magnitudes
        for float32)."""
        root = np.sqrt(self.values[:rank])
        return self.left[:, :rank] * root, root[:, None] * self.right[:rank]


def decompose(matrix: np.ndarray, gram: np.ndarray | None = None,
              damp: float = DAMP) -> Spectrum:
    """The spectrum of ``matrix`` ``[outputs, features]``; whitened by ``gram`` (``H``,
    ``[features, features]``) when given."""
    matrix = np.asarray(matrix, np.float64)
    if gram is None:
        left, values, right = np.linalg.svd(matrix, full_matrices=False)
        return Spectrum(left, values, right)
    gram = np.asarray(gram, np.float64)
    gram = gram + damp * max(float(np.mean(np.diag(gram))), 1e-30) * np.eye(len(gram))
    eigen, basis = np.linalg.eigh(gram)
    root = np.sqrt(np.maximum(eigen, eigen.max() * 1e-12))
    left, values, right = np.linalg.svd(matrix @ (basis * root), full_matrices=False)
    return Spectrum(left, values, (right / root) @ basis.T)
