"""``weight_only``: the real all-MiniLM-L6-v2 (dynamo export), fp32 against int8 and int4
weights (symmetric, block 32, round to nearest) in both formats (QDQ ``dq`` and ORT's
``MatMulNBits``), plus int4 with GPTQ and MatMulNBits with ``accuracy_level=4``.

Per variant: the file size, the bytes of the quantized MatMul weights against their fp32
bytes, latency (batch 1 and 8 of texts padded to ``seq`` tokens, all variants interleaved,
:mod:`benchmarks.core.timing`) and the cosine of each output (sentence embedding) with
fp32's over 64 inputs (MiniLM: the first 64 texts of ``models/minilm_texts.json``; mean and
min). GPTQ calibrates on texts 100-163, disjoint from those scored (the digits ViT of a smoke
run: on ``digits_calibration.npz``, scored on the first 64 test images).

    python -m benchmarks.run --suite weight_only [--repeats 20] [--set seq=128]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import onnxpress

from ..core import subjects
from ..core.quality import cosines, outputs
from ..core.suite import Context, Row, Suite, log, row, step
from ..core.tables import num, table
from ..core.timing import time_batches

VARIANTS = {
    "fp32": "",
    "dq int8": "weight-only(bits=8)",
    "dq int4": "weight-only(bits=4)",
    "dq int4 gptq": "weight-only(bits=4,method=gptq)",
    "nbits int8": "weight-only(bits=8,format=matmulnbits)",
    "nbits int4": "weight-only(bits=4,format=matmulnbits)",
    "nbits int4 acc4": "weight-only(bits=4,format=matmulnbits,accuracy_level=4)",
}


def data_of(subject: subjects.Subject) -> tuple[Any, dict[str, np.ndarray]]:
    """(GPTQ's calibration batches, the 64 inputs scored)."""
    if subject.name != "minilm":
        from onnxpress.models.datasets import load_dataset
        from onnxpress.models.digits_data import CALIBRATION_NPZ

        test = load_dataset("digits").inputs["image"]
        return onnxpress.CalibrationData(CALIBRATION_NPZ, batch_size=16), {"image": test[:64]}
    from onnxpress.models.minilm import tokenize

    texts = subjects.minilm_texts()
    return [tokenize(texts[s : s + 16]) for s in range(100, 164, 16)], tokenize(texts[:64])


def _variant(subject: subjects.Subject, name: str, spec: str, calibration: Any,
             ctx: Context) -> tuple[Path, dict[str, Any]]:
    if not spec:
        return subject.fp32, {}
    model, report = onnxpress.compile(subject.fp32, spec, calibration=calibration,
                                      return_report=True, progress=False)
    path = ctx.folder(subject.name) / f"{name.replace(' ', '_')}.onnx"
    onnxpress.save(model, path)
    log(f"{subject.name} {name}: {report.passes[-1].stats}")
    return path, report.passes[-1].stats


def measure(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in ctx.models:
        subject = subjects.subject(model, ctx.cache)
        calibration, scored = data_of(subject)
        reference = next(iter(outputs(subject.fp32, scored).values()))
        found = {}
        for name, spec in VARIANTS.items():
            if name != "fp32" and not ctx.wants(name):
                continue
            r = found[name] = row(model, name, spec=spec or "-")
            with step(r, "quantize"):
                path, stats = _variant(subject, name, spec, calibration, ctx)
                cos = cosines(reference, next(iter(outputs(path, scored).values())))
                r.update(path=str(path), file_mb=path.stat().st_size / 2**20, stats=stats,
                         weight_ratio=(stats["quantized_bytes"] / stats["float_bytes"]
                                       if stats else 1.0),
                         cos_mean=float(cos.mean()), cos_min=float(cos.min()))
        paths = {n: r["path"] for n, r in found.items() if r["status"] == "ok"}
        feeds = subjects.first_inputs(subject, ctx.options["seq"])
        with step(found["fp32"], "timing"):
            for batch, timed in time_batches(paths, feeds, repeats=ctx.repeats,
                                             threads=ctx.threads).items():
                for name, values in timed.items():
                    found[name][f"b{batch}_ms"] = values["median_ms"]
        rows += found.values()
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        return (f"{r['file_mb']:.1f}", f"{r['weight_ratio']:.3f}", num(r.get("b1_ms"), ".1f"),
                num(r.get("b8_ms"), ".1f"), f"{r['cos_mean']:.5f}", f"{r['cos_min']:.5f}")

    header = ("model", "variant", "file MB", "weights", "b1 ms", "b8 ms", "cos mean", "cos min")
    return {"weight-only quantization against fp32": table(header, rows, cells)}


SUITE = Suite("weight_only", __doc__, models=("minilm",), smoke_models=("digits_vit",),
              measure=measure, tables=tables, variants=tuple(VARIANTS), options={"seq": 128})
