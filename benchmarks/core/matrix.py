"""The variant-matrix driver of the ``baseline`` and ``quant`` suites: per model, build every
variant -> probe each in a fresh process (peak memory, load time, outputs) -> time them
interleaved -> quality -> ratios against fp32.

Models run one after another (a model's variants are timed with each other, never with
another model's); whatever fails (an export, a quantizer, a session) becomes that row's
error and the suite goes on.

Timing: with ``--repeats`` every variant gets that many rounds at batch 1 and 8; else each
model gets ``--seconds`` (35% at batch 1, 5-500 rounds after 3 warm-up runs; 65% at batch
8, 3-200 rounds after 1), and the rows say how many rounds ran.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import subjects
from .child import run_child
from .probe import probe
from .quality import agreement, dataset_metric
from .suite import Context, Row, first_line, log, row, step
from .timing import time_variants
from .variants import Variant, variant_file


def measure(ctx: Context, variants: dict[str, Variant], names: tuple[str, ...]) -> list[Row]:
    """Rows for every model of ``ctx`` x every variant it wants (fp32 always: the
    reference for ratios and agreement)."""
    chosen = [n for n in names if n == "fp32" or ctx.wants(n)]
    rows: list[Row] = []
    for model in ctx.models:
        rows += _model(ctx, model, {n: variants[n] for n in chosen})
    return rows


def _model(ctx: Context, model: str, variants: dict[str, Variant]) -> list[Row]:
    rows = {v: row(model, v, notes=[]) for v in variants}
    try:
        subject = subjects.subject(model, ctx.cache)
    except Exception as error:  # noqa: BLE001 - a failed export fails the model's rows
        for r in rows.values():
            r.update(status="error", error=f"prepare: {first_line(error)}")
        return list(rows.values())
    paths = {}
    for name, variant in variants.items():
        with step(rows[name], "build"):
            entry = variant_file(subject, name, variant, ctx)
            paths[name] = entry.path
            rows[name].update(file=os.fspath(entry.path), size_mb=entry.path.stat().st_size
                              / 2**20, build_s=entry.meta.get("build_s"), cached=entry.cached,
                              notes=list(entry.meta.get("notes", [])))
    outputs = _probe_all(subject, paths, rows, ctx.threads)
    _time_all(subject, paths, rows, ctx)
    _quality(subject, paths, rows, outputs)
    _ratios(rows)
    log(f"{model}: " + ", ".join(f"{v} {r['status']}" for v, r in rows.items()))
    return list(rows.values())


def _probe_all(subject: subjects.Subject, paths: dict[str, Path], rows: dict[str, Row],
               threads: int) -> dict[str, dict[str, np.ndarray]]:
    found = {}
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **subject.compare)
        for variant, path in list(paths.items()):
            out = Path(tmp) / f"{variant}.npz"
            with step(rows[variant], "run"):
                said = run_child(probe, model=str(path), inputs=str(inputs), outputs=str(out),
                                 threads=threads)
                rows[variant].update(said["value"])
                with np.load(out) as arrays:
                    found[variant] = {k: arrays[k] for k in arrays.files}
            if rows[variant]["status"] != "ok":
                del paths[variant]
    return found


def _time_all(subject: subjects.Subject, paths: dict[str, Path], rows: dict[str, Row],
              ctx: Context) -> None:
    budget = None if ctx.seconds is None else {1: 0.35 * ctx.seconds, 8: 0.65 * ctx.seconds}
    plans = (("latency_b1", 1, 3, 500, 5), ("throughput_b8", 8, 1, 200, 3))
    for key, batch, warmup, most, least in plans:
        if not paths:
            return
        try:
            timed = time_variants(paths, subject.compare, batch=batch, threads=ctx.threads,
                                  warmup=warmup, repeats=most if budget else ctx.repeats,
                                  budget_s=budget[batch] if budget else None, min_repeats=least)
        except Exception as error:  # noqa: BLE001 - the rows say it, the suite goes on
            for variant in paths:
                rows[variant].update(status="error", error=f"timing: {first_line(error)}")
            return
        for variant, values in timed.items():
            rows[variant][key] = values


def _quality(subject: subjects.Subject, paths: dict[str, Path], rows: dict[str, Row],
             outputs: dict[str, dict[str, np.ndarray]]) -> None:
    """Each row's ``vs_fp32`` (agreement), ``metric`` (the model's own) and ``quality``
    (what the tables and plot show: the metric, else top-1 agreement with fp32 for image
    classifiers and cosine for text encoders)."""
    reference, classifier = outputs.get("fp32"), subject.kind == "image"
    for variant, path in paths.items():
        r = rows[variant]
        if reference is not None and variant in outputs:
            try:
                r["vs_fp32"] = agreement(reference, outputs[variant], classifier=classifier)
            except RuntimeError as error:
                r["notes"].append(f"no comparison with fp32: {error}")
        if subject.eval_data:
            try:
                r["metric"] = dataset_metric(path, subject.eval_data)
            except Exception as error:  # noqa: BLE001 - a missing data set is a note
                r["notes"].append(f"no {subject.eval_data} metric: {first_line(error)}")
        if "metric" in r:
            r["quality"] = {"name": r["metric"]["metric"], "value": r["metric"]["value"]}
        elif "vs_fp32" in r:
            name = "top1_agreement" if classifier else "cosine"
            r["quality"] = {"name": f"{name} vs fp32", "value": r["vs_fp32"][name]}


def _ratios(rows: dict[str, Row]) -> None:
    """Variant / fp32 for latency (b1 median), throughput (b8), size and peak memory."""
    base = rows.get("fp32", {})
    picks = {"latency": ("latency_b1", "median_ms"), "throughput": ("throughput_b8",
             "samples_per_s"), "size": ("size_mb", None), "peak": ("peak_mb", None)}
    for r in rows.values():
        r["ratios"] = {}
        for name, (key, inner) in picks.items():
            mine, theirs = r.get(key), base.get(key)
            if inner and mine and theirs:
                mine, theirs = mine[inner], theirs[inner]
            if isinstance(mine, float) and isinstance(theirs, float) and theirs > 0:
                r["ratios"][name] = mine / theirs

