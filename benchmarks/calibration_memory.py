"""Calibration memory benchmark: peak RSS and wall time of ``collect`` on MiniLM.

Usage::

    python benchmarks/calibration_memory.py [--method entropy] [--samples 512] [--batch 8]
                                            [--seq 128] [--out results/calibration_memory.json]

Calibrates all-MiniLM-L6-v2 (our export) on ``models/minilm_texts.json`` sentences, cycled to
``--samples`` texts, tokenized in batches of ``--batch`` padded to ``--seq`` tokens, observing
every non-constant MatMul/Gemm input with the ``--method`` observer. Reports this process's
peak RSS (``VmHWM``; the model is exported, when not cached yet, in a child process so that
torch does not count), the RSS before calibration, and the wall time of ``collect`` and of
the observers' ``range()``. The quantization issue's acceptance: peak under 2 GB. Exit code 1
when the peak is over it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cleanup_worker import _peak_rss_mb as peak_rss_mb

HERE = Path(__file__).resolve().parent
LIMIT_MB = 2048


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_path() -> Path:
    """The cached MiniLM export, made in a child process if it is missing."""
    code = "from onnxpress.models.minilm import minilm_onnx; print(minilm_onnx())"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def batches(samples: int, batch: int, seq: int) -> Iterator[dict]:
    from onnxpress.models.minilm import tokenize

    texts_file = HERE.parent / "models" / "minilm_texts.json"
    texts = [s["text"] for s in json.loads(texts_file.read_text())["sentences"]]
    cycled = [texts[i % len(texts)] for i in range(samples)]
    for start in range(0, samples, batch):
        yield tokenize(cycled[start : start + batch], max_length=seq, pad_to=seq)


def matmul_activations(model) -> list[str]:
    from onnxpress.ir.analysis import is_constant

    names = [v.name for node in model.graph if node.op_type in ("MatMul", "Gemm")
             for v in node.inputs[:2] if v is not None and not is_constant(v)]
    return list(dict.fromkeys(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="entropy")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    path = model_path()
    import onnxpress
    from onnxpress.passes.quantize.calibration import collect

    model = onnxpress.load(path)
    values = matmul_activations(model)
    rss_before = rss_mb()
    start = time.perf_counter()
    observers = collect(model, values, batches(args.samples, args.batch, args.seq),
                        method=args.method)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    ranges = {name: tuple(map(float, o.range())) for name, o in observers.items()}
    range_s = time.perf_counter() - start
    result = {
        "model": path.name, "method": args.method, "values": len(values),
        "samples": args.samples, "batch": args.batch, "seq": args.seq,
        "rss_before_calibration_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "collect_s": round(collect_s, 2), "range_s": round(range_s, 2),
        "widest": max(ranges.items(), key=lambda kv: kv[1][1] - kv[1][0]),
    }
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["peak_rss_mb"] < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
