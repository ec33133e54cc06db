"""Child process for test_large_model: load, cleanup, save, reload a model whose weights
are external, then print what it saw and its own peak RSS (so nothing else is counted).

Not a test module (no ``test_`` prefix); run as ``python large_model_job.py IN OUT``.
"""

from __future__ import annotations

import json
import resource
import sys

import onnxpress


def main(source: str, target: str) -> None:
    model = onnxpress.load(source)
    model, report = onnxpress.compile(model, "cleanup", return_report=True)
    onnxpress.save(model, target)
    reloaded = onnxpress.load(target)
    onnxpress.ir.verify(reloaded)
    print(json.dumps({
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "nodes_before": report.passes[0].nodes_before,
        "nodes_after": report.passes[-1].nodes_after,
        "weight_bytes": onnxpress.ir.parameter_bytes(reloaded),
        "reloaded_nodes": onnxpress.ir.count_nodes(reloaded),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
