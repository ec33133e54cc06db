"""``lowrank``: truncated-SVD factorisation, one-shot (no fine-tuning), in three parts.

**Speed**: ViT-S/16 (``deit_small``, random weights) as ``cleanup`` against
``lowrank(ratio=0.5,...,aware=false)`` in the MLPs only (the issue's case) and in every
linear layer; the real all-MiniLM-L6-v2 against ``lowrank(params=0.75)`` (activation-aware
on its calibration texts), timed on 8 sentences padded to 128 tokens. Per variant: layers
factored / eligible, the eligible linear weights before and after, parameters, file size,
medians and speed-ups at batch 1 and 8, cosine against the dense model (a sanity number only
for deit_small). Run with ``OPENBLAS_NUM_THREADS=1`` on a shared machine, where numpy's
threaded SVD can take 70x longer.

**Accuracy** (trained digits ViT and CNN, real MiniLM): each model at two budgets, a
``params`` fraction of the eligible weights kept overall and a per-layer rank ``ratio``,
each plain (``aware=false``: SVD of the weights) and activation-aware (``aware=true``: SVD
after whitening by the calibration inputs' second moments); both get the calibration data,
so a ``params`` budget is spread by measured sensitivity in both and the whitening is the
only difference. The digits CNN's layers are under the default ``min_elements``, so there it
is 0. ``kept`` is weights_after / weights_before of the eligible layers; ``s`` the pass's
wall time.

**Compensation**: int4 weight-only alone, and with EoRA-style low-rank branches of two ranks
(``lowrank(compensate=...,rank=R)``), with the share of int4's loss against the dense model
they win back (MiniLM: 1 - Spearman; digits: the logits' error, since 450 images cannot
resolve int4's accuracy change). Metrics as :func:`benchmarks.core.quality.scored`.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.run --suite lowrank [--repeats 40]
"""

from __future__ import annotations

from typing import Any

from ..core import compression
from ..core.suite import Context, Row, Suite
from .lowrank_tables import tables

SPEED = {"deit_small": ("lowrank(ratio=0.5,layers=mlp,aware=false)",
                        "lowrank(ratio=0.5,aware=false)"),
         "minilm": ("lowrank(params=0.75)",)}
#: per model, the budgets measured plain and aware (``params``: a fraction of the eligible
#: weights overall; ``ratio``: of each layer's rank, which keeps a square layer dense at 0.5)
ACCURACY = {"digits_vit": ("params=0.7", "ratio=0.5"),
            "digits_cnn": ("params=0.7,min_elements=0", "ratio=0.5,min_elements=0"),
            "minilm": ("params=0.75", "ratio=0.375")}
#: per model, a weight pipeline whose error low-rank branches of each rank make up
COMPENSATE = {"digits_vit": ("weight-only(bits=4,block_size=32,min_elements=0,method=rtn)",
                             (8, 16)),
              "minilm": ("weight-only(bits=4,block_size=128,method=rtn)", (16, 32))}
#: --smoke: the MLP variant on the digits ViT for speed, one budget on the (fast) digits CNN,
#: one rank on the digits ViT (the CNN's one Gemm is too small to compensate)
SMOKE = ({"digits_vit": SPEED["deit_small"][:1]}, {"digits_cnn": ACCURACY["digits_cnn"][1:]},
         {"digits_vit": (COMPENSATE["digits_vit"][0], (8,))})


def _build(model: str, source: Any, spec: str, path: Any, data: Any = None) -> Row:
    """``compression.build`` plus ``kept``: the eligible linear weights' fraction left."""
    r = compression.build(model, source, spec, path, data)
    stats = r["stats"]
    kept = stats["weights_after"] / stats["weights_before"] if "weights_after" in stats else None
    return dict(r, kept=kept)


def speed(ctx: Context, model: str, specs: tuple[str, ...]) -> list[Row]:
    source, data, feeds = compression.source(model, ctx)
    folder = ctx.folder(model)
    rows = [compression.attempt(model, spec, lambda i=i, spec=spec: _build(
        model, source, spec, folder / f"v{i}.onnx", data if spec else None))
        for i, spec in enumerate(("", *specs))]
    return [dict(r, part="speed") for r in compression.timed(ctx, rows, feeds)]


def accuracy(ctx: Context, model: str, budgets: tuple[str, ...],
             compensate: tuple[str, tuple[int, ...]] | None) -> list[Row]:
    source, data, _ = compression.source(model, ctx)
    folder = ctx.folder(model)
    plan = [("", "dense", None, "accuracy")] + [
        (f"lowrank({budget},aware={str(aware).lower()})", budget, aware, "accuracy")
        for budget in budgets for aware in (False, True)]
    if compensate:
        pipeline, ranks = compensate
        plan += [(pipeline, None, None, "compensation")] + [
            (f"lowrank(compensate='{pipeline}',rank={r})", None, None, "compensation")
            for r in ranks]
    rows = [dict(compression.attempt(model, spec, lambda i=i, spec=spec: _build(
        model, source, spec, folder / f"a{i}.onnx", data)), budget=budget, aware=aware,
        part=part) for i, (spec, budget, aware, part) in enumerate(plan)]
    return compression.with_metrics(ctx, rows)


def measure(ctx: Context) -> list[Row]:
    fast, good, fixes = SMOKE if ctx.smoke else (SPEED, ACCURACY, COMPENSATE)
    rows = []
    for model in ctx.models:
        if model in fast:
            rows += speed(ctx, model, fast[model])
        if model in good or model in fixes:
            rows += accuracy(ctx, model, good.get(model, ()), fixes.get(model))
    return rows


SUITE = Suite("lowrank", __doc__, models=("deit_small", "minilm", "digits_vit", "digits_cnn"),
              smoke_models=("digits_vit", "digits_cnn"), measure=measure, tables=tables,
              repeats=40)
