"""``fuse_for_ort``: DeiT-S/16 and the real all-MiniLM-L6-v2 (dynamo exports), fp32 against
fp32 + ``fuse-for-ort``, and against the same with ``skip_layer_norm=true`` (off by default
in the pass; timed here to show why).

Latency as :mod:`benchmarks.core.timing` measures it, batch 1 and 8, all three interleaved.
DeiT gets its seeded comparison images; MiniLM the first sentences of
``models/minilm_texts.json`` padded to ``seq`` tokens (``--set seq=128``). The largest
output difference from fp32 (relative to the output's scale) is reported with each variant.

    python -m benchmarks.run --suite fuse_for_ort [--repeats 30] [--set seq=128]
"""

from __future__ import annotations

import onnxpress

from ..core import subjects
from ..core.quality import max_rel_diff, outputs
from ..core.suite import Context, Row, Suite, log, row, step
from ..core.tables import table
from ..core.timing import speedups, time_batches

VARIANTS = {"fp32": "", "fuse-for-ort": "fuse-for-ort",
            "fuse-for-ort+skipln": "fuse-for-ort(skip_layer_norm=true)"}


def measure(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for model in ctx.models:
        subject = subjects.subject(model, ctx.cache)
        feeds = subjects.first_inputs(subject, ctx.options["seq"])
        paths, stats = {}, {}
        for variant, spec in VARIANTS.items():
            if variant != "fp32" and not ctx.wants(variant):
                continue
            failed = row(model, variant)
            with step(failed, "fuse"):
                paths[variant], stats[variant] = _fused(subject, variant, spec, ctx)
            if failed["status"] != "ok":
                rows.append(failed)
        rows += _timed(ctx, model, paths, stats, feeds)
    return rows


def _fused(subject: subjects.Subject, variant: str, spec: str, ctx: Context) -> tuple:
    if not spec:
        return subject.fp32, {}
    model, report = onnxpress.compile(subject.fp32, spec, return_report=True, progress=False)
    path = ctx.folder(subject.name) / f"{variant}.onnx"
    onnxpress.save(model, path)
    log(f"{subject.name} {variant}: {report.passes[-1].stats}")
    return path, report.passes[-1].stats


def _timed(ctx: Context, model: str, paths: dict, stats: dict, feeds: dict) -> list[Row]:
    if "fp32" not in paths:
        return []
    expected = outputs(paths["fp32"], feeds)
    diffs = {v: max_rel_diff(expected, outputs(p, feeds)) for v, p in paths.items()}
    rows = []
    for batch, timed in time_batches(paths, feeds, repeats=ctx.repeats,
                                     threads=ctx.threads).items():
        for variant, speedup in speedups(timed, "fp32").items():
            t = timed[variant]
            rows.append(row(model, variant, batch=batch, median_ms=t["median_ms"],
                            p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], speedup=speedup,
                            max_rel_diff=diffs[variant], repeats=t["repeats"],
                            stats=stats[variant]))
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        return (str(r["batch"]), f"{r['median_ms']:.2f}", f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
                f"{r['speedup']:.3f}x", f"{r['max_rel_diff']:.2e}")

    header = ("model", "variant", "batch", "median ms", "p10-p90 ms", "speed-up",
              "max rel diff")
    return {"fuse-for-ort against fp32": table(header, rows, cells)}


SUITE = Suite("fuse_for_ort", __doc__, models=("deit_small", "minilm"),
              smoke_models=("digits_vit",), measure=measure, tables=tables,
              variants=tuple(VARIANTS), repeats=30, options={"seq": 128})
