"""Latency on ONNX Runtime CPU: warm-up, then interleaved repetitions (A B A B ...), so
that a noisy neighbour slows every model alike; medians and spread. Sessions run without
thread spinning, else each finished model's spinning threads slow the next one down, and
as a deployment opens them: without ``ort_runner.PRECISE_INT8``, which the numeric checks
use."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from onnxpress.backends.inputs import ModelInputs
from onnxpress.backends.ort_optimize import providers
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
    repeats: int  # timed runs per model: ``repeats``, or fewer where ``budget_s`` ran out


def bench_models(
    models: Sequence[tuple[str, object]],
    *,
    threads: int = 2,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    progress: bool | None = None,
    budget_s: float | None = None,
    min_repeats: int = 3,
    feeds: Mapping[str, np.ndarray] | None = None,
    provider: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
) -> list[BenchRow]:
    """``models``: (label, path or IR model) pairs; every model gets the same inputs when
    their signatures match.

    ``budget_s``: stop after the round in which the timed rounds passed ``budget_s`` seconds
    (but not before ``min_repeats`` rounds), so that a suite of slow and fast models can share
    one time budget; ``BenchRow.repeats`` says how many rounds ran.

    ``feeds``: inputs for every model (the first ``batch`` samples of each, along each
    input's sample axis; a model takes the ones it names), for models whose random inputs
    would not be representative (a dynamic axis gets ``inputs.DEFAULT_DIM``). Default:
    random inputs fitting each model (``backends.inputs``), shaped by ``input_shapes`` and
    ``dims`` where given.

    ``provider``: ONNX Runtime execution providers (``"cuda"``, ...; CPU when None)."""
    chosen = providers(provider)
    runners = [(label, Runner(model, threads=threads, spinning=False, providers=chosen,
                              precise=False))
               for label, model in models]
    inputs = [
        _random(model, batch, input_shapes, dims) if feeds is None
        else _first(model, {name: feeds[name] for name in runner.input_names}, batch)
        for (_, model), (_, runner) in zip(models, runners)
    ]
    for (_, runner), feed in zip(runners, inputs):
        for _ in range(warmup):
            runner.run(feed)
    times: list[list[float]] = [[] for _ in runners]
    hidden = None if progress is None else not progress  # None: tty decides
    started = time.perf_counter()
    for done in tqdm(range(1, repeats + 1), desc="bench", disable=hidden, leave=False):
        for index, ((_, runner), feed) in enumerate(zip(runners, inputs)):
            start = time.perf_counter()
            runner.run(feed)
            times[index].append((time.perf_counter() - start) * 1e3)
        if budget_s is not None and done >= min_repeats:
            if time.perf_counter() - started >= budget_s:
                break
    rows = []
    for (label, _), samples in zip(runners, times):
        deciles = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
        median = statistics.median(samples)
        rows.append(BenchRow(label, batch, threads, median, deciles[0], deciles[-1],
                             batch * 1e3 / median, len(samples)))
    return rows


def _inputs(model: object, input_shapes: Mapping[str, Sequence[int]] | None = None
            ) -> ModelInputs:
    graph = model if isinstance(model, ir.Model) else ir.load(model)  # lazy: no weights read
    return ModelInputs.of(graph, input_shapes)


def _random(model: object, batch: int, input_shapes: Mapping[str, Sequence[int]] | None,
            dims: Mapping[str, int] | None) -> dict[str, np.ndarray]:
    return _inputs(model, input_shapes).random(seed=0, batch=batch, dims=dims)


def _first(model: object, feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` samples, each input cut along its own sample axis (a scalar
    sample rate or a state input kept whole)."""
    return next(_inputs(model).batches(feeds, batch, origin="the benchmark's inputs"))
