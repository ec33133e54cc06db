"""Compare a model's outputs with a reference model's on the same inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from onnxpress.ir.agreement import cosine
from onnxpress.passes.report import OutputCheck


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    tolerance: float,
) -> list[OutputCheck]:
    """Per output: max |a-b|, that divided by max |a| (the output's scale), cosine.

    ``ok`` when the relative error is within ``tolerance``; outputs the candidate lacks or
    whose shapes differ fail.
    """
    checks = []
    for name, ref in reference.items():
        out = candidate.get(name)
        if out is None or np.shape(out) != np.shape(ref):
            checks.append(OutputCheck(name, float("inf"), float("inf"), 0.0, False))
            continue
        checks.append(_compare_one(name, np.asarray(ref), np.asarray(out), tolerance))
    return checks


def _compare_one(name: str, ref: np.ndarray, out: np.ndarray, tolerance: float) -> OutputCheck:
    if not np.issubdtype(ref.dtype, np.number) and ref.dtype != np.bool_:
        same = bool(np.array_equal(ref, out))
        return OutputCheck(name, 0.0 if same else 1.0, 0.0 if same else 1.0, 1.0, same)
    a = ref.astype(np.float64).ravel()
    b = out.astype(np.float64).ravel()
    both_nan = np.isnan(a) & np.isnan(b)
    a, b = np.where(both_nan, 0, a), np.where(both_nan, 0, b)
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    similarity = cosine(a, b)
    ok = bool(np.isfinite(max_rel) and max_rel <= tolerance)
    return OutputCheck(name, max_abs, max_rel, similarity, ok)


def merge_checks(batches: Iterable[list[OutputCheck]]) -> list[OutputCheck]:
    """Worst case over several input batches, per output."""
    merged: dict[str, OutputCheck] = {}
    for batch in batches:
        for check in batch:
            old = merged.get(check.name)
            if old is None:
                merged[check.name] = check
            else:
                merged[check.name] = OutputCheck(
                    check.name,
                    max(old.max_abs, check.max_abs),
                    max(old.max_rel, check.max_rel),
                    min(old.cosine, check.cosine),
                    old.ok and check.ok,
                )
    return list(merged.values())
