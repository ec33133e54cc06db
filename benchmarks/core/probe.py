"""The child process whose memory the variant suites report (run it with
:func:`.child.run_child`): it imports numpy and onnxruntime only, as a user's process would,
creates a session with the suites' session options, runs the first batch of 8 inputs and
reads its own peak RSS (:mod:`.memory`), then runs the rest and saves every output, from
which the parent computes agreement with fp32. One session per variant thus gives memory,
load time and outputs."""

from __future__ import annotations

import time
from typing import Any

from .memory import peak_rss_mb

BATCH = 8


def session_options(threads: int) -> Any:
    """What every variant is probed with, as ``bench_models`` times it: ORT's default graph
    optimisation (ORT_ENABLE_ALL), ``threads`` intra-op threads, one inter-op, sequential."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def probe(model: str, inputs: str, outputs: str, threads: int) -> dict[str, float]:
    """Peak MB after the first batch, MB after the imports, session load seconds; the
    outputs on every input go to ``outputs`` (.npz)."""
    import numpy as np
    import onnxruntime as ort

    imported_mb = peak_rss_mb()
    start = time.perf_counter()
    session = ort.InferenceSession(model, session_options(threads),
                                   providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    with np.load(inputs) as arrays:
        feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    count = len(next(iter(feeds.values())))
    results, peak_mb = [], 0.0
    for begin in range(0, count, BATCH):
        results.append(session.run(None, {k: v[begin : begin + BATCH] for k, v in feeds.items()}))
        peak_mb = peak_mb or peak_rss_mb()  # after the first batch of 8
    names = [o.name for o in session.get_outputs()]
    np.savez(outputs, **{name: np.concatenate([r[i] for r in results])
                         for i, name in enumerate(names)})
    return {"peak_mb": peak_mb, "imported_mb": imported_mb, "load_s": load_s}
