"""How close a sentence encoder stays to a reference encoder, in numpy only (no scipy).

A compiled or quantized encoder is judged by what its embeddings are used for, relative to
the fp32 reference on the same inputs:

- ``retrieval_agreement``: the fraction of samples whose nearest neighbour (by cosine,
  itself excluded) is the same sample under the model as under the reference, i.e. whether
  a semantic search over the set returns the same top hit;
- ``spearman``: Spearman rank correlation between the model's and the reference's cosine
  similarities over the given pairs (all ``i < j`` pairs when none are given), i.e. whether
  the model orders pairs by similarity as the reference does;
- ``mean_cosine``: mean cosine between each sample's model and reference embedding (only
  when both have the same width; a smaller model can still rank and retrieve), by
  ``ir.agreement``'s one rule for a zero norm.
"""

from __future__ import annotations

import numpy as np

from onnxpress.errors import BadInputError
from onnxpress.ir.agreement import sample_cosines


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in float64 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``[N, S, D]`` token states -> ``[N, D]``: the mean over tokens where ``mask`` is set
    (sentence-transformers' pooling; padding must not count), over all tokens without one."""
    hidden = np.asarray(hidden, dtype=np.float64)
    if mask is None:
        return hidden.mean(axis=1)
    weights = np.asarray(mask, dtype=np.float64)[:, :, None]
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties sharing the mean of their ranks (the convention
    Spearman's coefficient needs so that tied values do not get an arbitrary order)."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]  # exclusive
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = run_rank[np.cumsum(first) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho = Pearson correlation of the average ranks; NaN when either side is
    constant or has fewer than two values (the coefficient is undefined there)."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) != len(rb):
        raise BadInputError(f"spearman: {len(ra)} values vs {len(rb)}")
    if len(ra) < 2:
        return float("nan")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row (ties: the lowest index)."""
    unit = l2_normalise(embeddings)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def encoder_metrics(
    embeddings: np.ndarray, reference: np.ndarray, pairs: np.ndarray | None = None
) -> dict[str, float]:
    """``spearman``, ``retrieval_agreement`` and (equal widths only) ``mean_cosine`` of
    ``embeddings`` ``[N, D]`` against ``reference`` ``[N, D']``."""
    if embeddings.ndim != 2 or reference.ndim != 2 or len(embeddings) != len(reference):
        raise BadInputError(f"embeddings {embeddings.shape} and reference {reference.shape} "
                            "must both be [N, D] with the same N")
    if len(embeddings) < 2:
        raise BadInputError("an encoder needs at least 2 samples to compare similarities")
    model, ref = l2_normalise(embeddings), l2_normalise(reference)
    if pairs is None:
        i, j = np.triu_indices(len(model), k=1)
    else:
        i, j = pairs[:, 0], pairs[:, 1]
    metrics = {
        "spearman": spearman((model[i] * model[j]).sum(1), (ref[i] * ref[j]).sum(1)),
        "retrieval_agreement": float(
            np.mean(nearest_neighbours(model) == nearest_neighbours(ref))
        ),
    }
    if model.shape[1] == ref.shape[1]:
        metrics["mean_cosine"] = float(sample_cosines(reference, embeddings).mean())
    return metrics
