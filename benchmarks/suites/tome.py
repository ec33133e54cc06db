"""``tome``: token merging, training-free, in two parts.

**Speed**: ViT-S/16 @ 224 (``deit_small``, random weights) as ``cleanup`` (the unmerged
baseline) and ``fuse-for-ort`` (unmerged, with ORT's fused Attention and BiasGelu) against
``tome(r=13)`` (ToMe's off-the-shelf ViT-S setting) without and with ``fuse-for-ort``,
``schedule=decreasing`` (fused) and ``mode=prune``, then the ``int8`` preset alone and after
``tome(r=13)`` (calibrated on the model's calibration inputs), and the naive prototype
(:mod:`.tome_prototype`), whose largest logit difference from ``tome(r=13)`` is in its
notes (both compute the same merges on the same weights). Per variant: multiply-accumulates
at batch 1 (the pass's own count) and their share of the baseline's, file size, medians at
batch 1 and 8 (a third as many rounds), speed-ups against ``cleanup``, against the unmerged
``fuse-for-ort`` where the variant fuses too, and against the prototype where it merges as
many tokens; cosine against the baseline (a sanity number only: random weights).

**Accuracy**: the trained digits ViT (64 one-pixel patches + CLS = 65 tokens, 6 blocks) at
r = 0, 2, ..., 16 merged (ToMe) and dropped (``mode=prune``: the tokens the CLS token attends
to least), each with its multiply-accumulates kept; top-1 on the test split and on
``digits-shifted``; then ``tome`` followed by the ``int8`` preset. The plot shows accuracy
against r, both modes.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.run --suite tome [--repeats 120]

``--smoke``: ``vit_tiny_test`` (17 tokens, 2 blocks) at r=4 for speed (int8 composed there),
r in (0, 8) on the digits ViT.
"""

from __future__ import annotations

from ..core import compression
from ..core.quality import outputs
from ..core.suite import Context, Row, Suite, row, step
from .tome_prototype import TINY, prepare
from .tome_report import PROTOTYPE, plot, tables

R = {"deit_small": 13, TINY: 4}  # the tokens merged per block in the speed part


def speed_specs(r: int, smoke: bool) -> tuple[str, ...]:
    if smoke:
        return ("", "fuse-for-ort", f"tome(r={r})", f"tome(r={r}),fuse-for-ort",
                f"tome(r={r},mode=prune)", f"tome(r={r}),int8")
    return ("", "fuse-for-ort", f"tome(r={r})", f"tome(r={r}),fuse-for-ort",
            f"tome(r={r},schedule=decreasing),fuse-for-ort", f"tome(r={r},mode=prune)",
            "int8", f"tome(r={r}),int8")


def _build(model: str, source: object, spec: str, path: object, data: object) -> Row:
    """``compression.build`` keeping the tome pass's stats (tokens, MACs) wherever it ran;
    calibration only for int8."""
    return compression.build(model, source, spec, path, data if "int8" in spec else None,
                             stats_of="tome")


def speed(ctx: Context, model: str) -> list[Row]:
    r = R[model]
    failed = row(model, "exports", part="speed")
    with step(failed, "export"):
        fp32, prototype, feeds, data = prepare(model, ctx, r)
    if failed["status"] != "ok":
        return [failed]
    folder = ctx.folder(model)
    rows = [compression.attempt(model, spec, lambda i=i, spec=spec: _build(
        model, fp32, spec, folder / f"v{i}.onnx", data))
        for i, spec in enumerate(speed_specs(r, ctx.smoke))]
    ours = next((x for x in rows if x["variant"] == f"tome(r={r})" and x["status"] == "ok"), None)
    naive = row(model, PROTOTYPE.format(r=r), path=str(prototype),
                bytes=prototype.stat().st_size, seconds=0.0, notes=[], stats={})
    with step(naive, "compare with tome"):
        sample = {k: v[:8] for k, v in feeds.items()}
        logits = [next(iter(outputs(p, sample).values())) for p in (prototype, ours["path"])]
        gap = float(abs(logits[0] - logits[1]).max())
        naive.update(parameters=ours["parameters"],
                     stats=dict(ours["stats"], max_abs_diff_vs_tome=gap),
                     notes=[f"largest logit difference from {ours['variant']}: {gap:.2e}"])
    rows.append(naive)
    return [dict(x, part="speed") for x in compression.timed(ctx, rows, feeds, b8_divisor=3)]


def accuracy(ctx: Context, model: str) -> list[Row]:
    source, data, _ = compression.source(model, ctx)
    sweep, composed = ((0, 8), ()) if ctx.smoke else (
        tuple(range(0, 17, 2)), ("tome(r=10)", "int8", "tome(r=10),int8"))
    plan = [("", "merge", 0)] + [(f"tome(r={r},mode={mode})", mode, r)
                                 for mode in ("merge", "prune") for r in sweep[1:]]
    plan += [(spec, "composed", None) for spec in composed]
    folder = ctx.folder(model)
    rows = [dict(compression.attempt(model, spec, lambda i=i, spec=spec: _build(
        model, source, spec, folder / f"a{i}.onnx", data)), mode=mode, r=r, part="accuracy")
        for i, (spec, mode, r) in enumerate(plan)]
    return compression.with_metrics(ctx, rows)


def measure(ctx: Context) -> list[Row]:
    rows = []
    for model in ctx.models:
        rows += speed(ctx, model) if model in R else accuracy(ctx, model)
    return rows


SUITE = Suite("tome", __doc__, models=("deit_small", "digits_vit"),
              smoke_models=(TINY, "digits_vit"), measure=measure, tables=tables, plot=plot,
              repeats=60)
