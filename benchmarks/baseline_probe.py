"""The fresh child process whose peak memory the baseline suite reports.

``python baseline_probe.py MODEL INPUTS.npz OUTPUTS.npz RESULT.json THREADS`` creates an ONNX
Runtime session (the suite's session options), runs the first batch of 8 inputs and reads
its own RSS high-water mark (``VmHWM``: per address space, so the parent's memory does not
count, unlike ``ru_maxrss`` across exec) - that is the peak. Then it runs the remaining
batches and saves every output, from which the parent computes agreement with fp32; one
session per variant thus serves memory, load time and outputs. It imports numpy and
onnxruntime only, as a user's process would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cleanup_worker import _peak_rss_mb as peak_rss_mb

BATCH = 8


def session_options(threads: int):
    """The options every variant is timed and probed with: ORT's default graph optimisation
    (ORT_ENABLE_ALL), ``threads`` intra-op threads, one inter-op thread, sequential."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def probe(model: str, inputs: str, outputs: str, threads: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort

    imported_mb = peak_rss_mb()
    start = time.perf_counter()
    session = ort.InferenceSession(model, session_options(threads),
                                   providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - start
    names = [i.name for i in session.get_inputs()]
    with np.load(inputs) as arrays:
        feeds = {name: arrays[name] for name in names}
    count = len(next(iter(feeds.values())))
    results: list[list[np.ndarray]] = []
    peak_mb = 0.0
    for begin in range(0, count, BATCH):
        results.append(session.run(None, {k: v[begin : begin + BATCH] for k, v in feeds.items()}))
        peak_mb = peak_mb or peak_rss_mb()  # after the first batch of 8
    output_names = [o.name for o in session.get_outputs()]
    np.savez(outputs, **{name: np.concatenate([r[i] for r in results])
                         for i, name in enumerate(output_names)})
    return {"peak_mb": peak_mb, "imported_mb": imported_mb, "load_s": load_s}


if __name__ == "__main__":
    model_path, inputs_path, outputs_path, result_path, thread_count = sys.argv[1:6]
    result = probe(model_path, inputs_path, outputs_path, int(thread_count))
    Path(result_path).write_text(json.dumps(result))
