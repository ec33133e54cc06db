"""``calibration_memory``: peak memory and wall time of calibration (``collect``) on MiniLM.

Calibrates all-MiniLM-L6-v2 (our export) on ``models/minilm_texts.json`` sentences, cycled
to ``samples`` texts, tokenized in batches of ``batch`` padded to ``seq`` tokens, observing
every non-constant MatMul/Gemm input with the ``method`` observer (``--set method=entropy
--set samples=512 --set batch=8 --set seq=128``; a smoke run: the digits ViT on 64
calibration images). The work runs in a fresh child process, whose peak RSS
(:mod:`benchmarks.core.memory`) is the number: imports, the model and the observers, not
the benchmark's. Reported with the RSS before calibration and the wall time of ``collect``
and of the observers' ``range()``. The quantization issue's acceptance: peak under 2 GB;
a row over it has ``passed: false`` and the runner exits 1.

    python -m benchmarks.run --suite calibration_memory [--set method=entropy]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..core import subjects
from ..core.child import run_child
from ..core.suite import Context, Row, Suite, row, step
from ..core.tables import table

LIMIT_MB = 2048


def measure(ctx: Context) -> list[Row]:
    rows = []
    options = {k: ctx.options[k] for k in ("method", "samples", "batch", "seq")}
    for model in ctx.models:
        r = row(model, options["method"], **options, limit_mb=LIMIT_MB)
        with step(r, "calibrate"):
            path = subjects.subject(model, ctx.cache).fp32
            said = run_child(calibrate, model=model, path=str(path), **options)
            r.update(said["value"], peak_rss_mb=round(said["peak_rss_mb"], 1))
            r["passed"] = r["peak_rss_mb"] < LIMIT_MB
        rows.append(r)
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        return (str(r["values"]), f"{r['samples']} x {r['seq'] if r['model'] == 'minilm' else '-'}",
                f"{r['rss_before_calibration_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
                f"{r['collect_s']:.2f}", f"{r['range_s']:.2f}",
                "yes" if r["passed"] else f"NO (> {LIMIT_MB} MB)")

    header = ("model", "method", "values observed", "samples x tokens", "RSS before MB",
              "peak RSS MB", "collect s", "range s", "under 2 GB")
    return {"calibration memory (a fresh process)": table(header, rows, cells)}


# --- the child process -------------------------------------------------------------------

def _batches(model: str, samples: int, batch: int, seq: int) -> Iterator[dict[str, Any]]:
    if model != "minilm":
        import numpy as np

        from onnxpress.models.digits_data import CALIBRATION_NPZ

        with np.load(CALIBRATION_NPZ) as arrays:
            images = arrays["image"]
        cycled = images[np.arange(samples) % len(images)]
        for start in range(0, samples, batch):
            yield {"image": cycled[start : start + batch]}
        return
    from onnxpress.models.minilm import tokenize

    texts = subjects.minilm_texts()
    cycled = [texts[i % len(texts)] for i in range(samples)]
    for start in range(0, samples, batch):
        yield tokenize(cycled[start : start + batch], max_length=seq, pad_to=seq)


def calibrate(model: str, path: str, method: str, samples: int, batch: int,
              seq: int) -> dict[str, Any]:
    import onnxpress
    from onnxpress.ir.analysis import is_constant
    from onnxpress.passes.quantize.calibrate.calibration import collect

    from ..core.memory import rss_mb

    ir_model = onnxpress.load(path)
    values = list(dict.fromkeys(
        v.name for node in ir_model.graph if node.op_type in ("MatMul", "Gemm")
        for v in node.inputs[:2] if v is not None and not is_constant(v)))
    before = rss_mb()
    start = time.perf_counter()
    observers = collect(ir_model, values, _batches(model, samples, batch, seq), method=method)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    ranges = {name: tuple(map(float, o.range())) for name, o in observers.items()}
    return {"file": path, "values": len(values), "rss_before_calibration_mb": round(before, 1),
            "collect_s": round(collect_s, 2), "range_s": round(time.perf_counter() - start, 2),
            "widest": max(ranges.items(), key=lambda kv: kv[1][1] - kv[1][0])}


SUITE = Suite("calibration_memory", __doc__, models=("minilm",), smoke_models=("digits_vit",),
              measure=measure, tables=tables,
              options={"method": "entropy", "samples": 512, "batch": 8, "seq": 128},
              smoke_options={"samples": 64})
