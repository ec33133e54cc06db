"""Variants of a model timed side by side at fixed rounds, for the int8 headline suites
(``quant_headline``, ``ort_target``): every variant interleaved at batch 1 and 8 on the
model's comparison inputs (MiniLM: 8 real sentences padded to 128 tokens), speed-up against
fp32, size as % of fp32, and quality: MiniLM's ``minilm-texts`` metrics (mean cosine and
Spearman against fp32 embeddings on the 300-sentence set); for the others output cosine and
top-1 agreement against fp32 on the comparison inputs.
"""

from __future__ import annotations

from typing import Any

import onnxpress

from . import subjects
from .suite import Context, Row, first_line, log, row, step
from .tables import num, ratio, table
from .timing import speedups, time_batches
from .variants import Variant, variant_file

HEADER = ("model", "variant", "b1 ms", "b1 vs fp32", "b8 ms", "b8 vs fp32", "size %",
          "quality")


def measure(ctx: Context, builders: dict[str, Variant], names: tuple[str, ...]) -> list[Row]:
    rows: list[Row] = []
    for model in ctx.models:
        rows += _model(ctx, model, [n for n in names if n == "fp32" or ctx.wants(n)], builders)
    return rows


def _model(ctx: Context, model: str, names: list[str], builders: dict[str, Variant]) -> list[Row]:
    rows = {n: row(model, n) for n in names}
    try:
        subject = subjects.subject(model, ctx.cache)
    except Exception as error:  # noqa: BLE001 - a failed export fails the model's rows
        return [dict(r, status="error", error=f"prepare: {first_line(error)}")
                for r in rows.values()]
    paths = {}
    for name in names:
        with step(rows[name], "build"):
            entry = variant_file(subject, name, builders[name], ctx)
            paths[name] = entry.path
            rows[name].update(file=str(entry.path), bytes=entry.path.stat().st_size,
                              notes=list(entry.meta.get("notes", [])))
    if "fp32" not in paths:
        return list(rows.values())
    with step(rows["fp32"], "timing"):
        timed = time_batches(paths, subject.compare, repeats=ctx.repeats, threads=ctx.threads)
        for batch, values in timed.items():
            for name, ratio_ in speedups(values, "fp32").items():
                rows[name].update({f"b{batch}_ms": values[name]["median_ms"],
                                   f"b{batch}_speedup": ratio_,
                                   f"b{batch}_rounds": values[name]["repeats"]})
    for name, path in paths.items():
        with step(rows[name], "quality"):
            rows[name]["size_pct"] = 100 * rows[name]["bytes"] / rows["fp32"]["bytes"]
            rows[name]["quality"] = quality(subject, paths["fp32"], path)
        log(f"  {model} {name}: {rows[name]['status']}")
    return list(rows.values())


def quality(subject: subjects.Subject, fp32: Any, path: Any) -> dict[str, float]:
    if subject.name == "minilm":
        metrics = onnxpress.evaluate(path, "minilm-texts", progress=False).metrics
        return {"cosine": metrics["mean_cosine"], "spearman": metrics["spearman"]}
    found = onnxpress.compare(fp32, path, [subject.compare], batches=1)[0]
    return {"cosine": found["cosine"], "top1_agreement": found["top1_agreement"]}


def quality_text(q: dict[str, float] | None) -> str:
    if not q:
        return "-"
    if "spearman" in q:
        return f"cos {q['cosine']:.4f}, spearman {q['spearman']:.4f}"
    return f"cos {q['cosine']:.4f}, top-1 {num(q['top1_agreement'])}"


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        return (num(r.get("b1_ms")), ratio(r.get("b1_speedup")), num(r.get("b8_ms"), ".1f"),
                ratio(r.get("b8_speedup")), num(r.get("size_pct"), ".0f"),
                quality_text(r.get("quality")))

    notes = [f"- {r['model']} {r['variant']}: {n}" for r in rows for n in r.get("notes", [])]
    found = {"speed-up against fp32 (medians, interleaved), size % of fp32":
             table(HEADER, rows, cells)}
    return {**found, "notes": "\n".join(notes)} if notes else found
