"""Compare a model's outputs with a reference model's on the same inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from onnxpress.ir.agreement import cosine, max_difference, paired, within
from onnxpress.passes.report import OutputCheck


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    tolerance: float,
    atol: float = 0.0,
) -> list[OutputCheck]:
    """Per output: max |a-b|, that divided by max |a| (the output's scale), cosine.

    ``ok`` when max |a-b| <= ``atol`` + ``tolerance`` x max |a|, as ``numpy.allclose`` but
    relative to the output's scale rather than each element: an output of tiny magnitude
    (a detector's sigmoid peaking at 5e-4) is not failed for float rounding, and a large
    one is held to its relative tolerance. Outputs the candidate lacks or whose shapes
    differ fail.
    """
    checks = []
    for name, ref in reference.items():
        out = candidate.get(name)
        if out is None or np.shape(out) != np.shape(ref):
            checks.append(OutputCheck(name, float("inf"), float("inf"), 0.0, False))
            continue
        checks.append(_compare_one(name, np.asarray(ref), np.asarray(out), tolerance, atol))
    return checks


def _compare_one(name: str, ref: np.ndarray, out: np.ndarray, tolerance: float,
                 atol: float) -> OutputCheck:
    max_abs, scale = max_difference(ref, out)
    max_rel = max_abs / scale if scale > 0 else max_abs
    numeric = np.issubdtype(ref.dtype, np.number) or ref.dtype == np.bool_
    similarity = cosine(*paired(ref, out)) if numeric else float(max_abs == 0)
    ok = within(ref, out, rtol=tolerance, atol=atol)
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
