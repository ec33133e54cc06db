"""Latency on ONNX Runtime CPU: warm-up, then interleaved repetitions (A B A B ...), so
that a noisy neighbour slows every model alike; medians and spread."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

from tqdm import tqdm

from onnxpress.backends.ort_runner import Runner


@dataclasses.dataclass
class BenchRow:
    model: str
    batch: int
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    throughput: float  # samples per second at the median


def bench_models(
    models: Sequence[tuple[str, object]],
    *,
    threads: int = 2,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    progress: bool | None = None,
) -> list[BenchRow]:
    """``models``: (label, path or IR model) pairs; every model gets the same inputs when
    their signatures match."""
    runners = [(label, Runner(model, threads=threads)) for label, model in models]
    feeds = [runner.sample_inputs(seed=0, batch=batch) for _, runner in runners]
    for (_, runner), feed in zip(runners, feeds):
        for _ in range(warmup):
            runner.run(feed)
    times: list[list[float]] = [[] for _ in runners]
    hidden = None if progress is None else not progress  # None: tty decides
    for _ in tqdm(range(repeats), desc="bench", disable=hidden, leave=False):
        for index, ((_, runner), feed) in enumerate(zip(runners, feeds)):
            start = time.perf_counter()
            runner.run(feed)
            times[index].append((time.perf_counter() - start) * 1e3)
    rows = []
    for (label, _), samples in zip(runners, times):
        deciles = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
        median = statistics.median(samples)
        rows.append(BenchRow(label, batch, threads, median, deciles[0], deciles[-1],
                             batch * 1e3 / median))
    return rows
