"""Latency, only through ``onnxpress.backends.bench.bench_models``: warm-up, then rounds in
which every variant of a model runs once, interleaved (A B C A B C ...), so that a noisy
neighbour slows them all alike; medians and p10/p90 of the rounds. Sessions run on the CPU
provider at ONNX Runtime's default level (ORT_ENABLE_ALL), ``threads`` intra-op threads,
one inter-op thread, no thread spinning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxpress.backends.bench import bench_models

SESSION = ("ONNX Runtime CPU, ORT_ENABLE_ALL (its default), intra_op={threads}, inter_op=1, "
           "sequential, no thread spinning; variants of a model interleaved round by round")
Timed = dict[str, dict[str, float]]  # variant -> median_ms, p10_ms, p90_ms, samples_per_s, repeats


def time_variants(paths: Mapping[str, Path | str], feeds: Mapping[str, np.ndarray], *,
                  batch: int, repeats: int, threads: int = 2, warmup: int = 3,
                  budget_s: float | None = None, min_repeats: int = 3) -> Timed:
    """Every variant on the first ``batch`` samples of ``feeds`` (the model's own inputs:
    random ones would give a dynamic sequence axis length 1). ``budget_s``: stop after the
    round that passes it (not before ``min_repeats``); ``repeats`` is then the most."""
    rows = bench_models([(label, os.fspath(path)) for label, path in paths.items()],
                        threads=threads, batch=batch, warmup=warmup, repeats=repeats,
                        progress=False, budget_s=budget_s,
                        min_repeats=min(min_repeats, repeats), feeds=feeds)
    return {r.model: {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms,
                      "samples_per_s": r.throughput, "repeats": r.repeats} for r in rows}


def time_batches(paths: Mapping[str, Path | str], feeds: Mapping[str, np.ndarray], *,
                 repeats: int, threads: int = 2, batches: Mapping[int, int] | None = None,
                 ) -> dict[int, Timed]:
    """``time_variants`` at each batch size; ``batches`` maps batch -> rounds (default: batch
    1 and 8, both ``repeats``)."""
    plan = batches or {1: repeats, 8: repeats}
    return {b: time_variants(paths, feeds, batch=b, repeats=n, threads=threads)
            for b, n in plan.items()}


def speedups(timed: Timed, base: str) -> dict[str, float]:
    """Base median / variant median per variant (> 1 is faster)."""
    reference = timed[base]["median_ms"]
    return {v: reference / t["median_ms"] for v, t in timed.items()}


def fewer(repeats: int, divisor: int) -> int:
    """Rounds at batch 8, where a round takes longer: a fraction of batch 1's, at least 5
    (or all of them when there are fewer, as in a smoke run)."""
    return max(repeats // divisor, min(5, repeats))


def summary(timed: Mapping[str, Any]) -> str:
    return ", ".join(f"{v} {t['median_ms']:.3g} ms" for v, t in timed.items())
