"""``prune``: structured pruning, one-shot (no retraining), in two parts.

**Speed** (random-weight zoo models ResNet-50, ResNet-18, MobileNetV2): ``cleanup`` against
``cleanup,prune(...)`` variants (no calibration data, so nothing is refitted), as
:mod:`benchmarks.core.compression` times them. Per variant: channels removed / channels of
the pruned groups, parameters, file size, medians at batch 1 and 8 and speed-ups, and the
output cosine against the unpruned model (random weights: a sanity number only).

**Accuracy** (trained digits CNN and ViT, real all-MiniLM-L6-v2): channel (CNN, 30%,
``multiple=1``) or MLP-width (ViT, MiniLM, 25%) pruning, importance magnitude | activation,
refit (the least-squares refit) false | true; the ViT also at 50% (beyond the test
split's noise) and with 2 of its 24 heads removed after its MLP width (the issue's case).
Metrics: digits top-1 on the test split, on ``digits-shifted`` and the logits' relative L2
error against the unpruned model; MiniLM's ``minilm-texts`` metrics (spearman of pair
similarities, mean cosine, retrieval agreement). ``prune s`` is the pass's wall time
(calibration run and refit included).

    python -m benchmarks.run --suite prune [--repeats 40] [--models resnet50,digits_cnn]

``--smoke``: the digits CNN only, both parts.
"""

from __future__ import annotations

from ..core import compression
from ..core.suite import Context, Row, Suite
from ..core.tables import num, table

SPEED = {"resnet50": ("prune(ratio=0.3)", "prune(ratio=0.3,multiple=1)", "prune(ratio=0.5)"),
         "resnet18": ("prune(ratio=0.3)",), "mobilenet_v2": ("prune(ratio=0.3)",)}
#: per model, the pipelines after cleanup, ``{p}`` taking each importance with the refit
#: off and on
ACCURACY = {"digits_cnn": ("prune(ratio=0.3,multiple=1{p})",),
            "digits_vit": ("prune(structure=mlp,ratio=0.25{p})",
                           "prune(structure=mlp,ratio=0.5{p})",
                           "prune(structure=mlp,ratio=0.25{p}),fuse-for-ort,"
                           "prune(structure=head,heads=2{p})"),
            "minilm": ("prune(structure=mlp,ratio=0.25{p})",)}
#: --smoke: the fast digits CNN for both parts
SMOKE_SPEED = {"digits_cnn": ("prune(ratio=0.3,multiple=1)",)}
SMOKE_ACCURACY = {"digits_cnn": ACCURACY["digits_cnn"]}


def removed(r: Row) -> str:
    s = r["stats"]
    if "heads_removed" in s:
        return f"{s['heads_removed']}/{s['heads']} heads"
    return f"{s['channels_removed']}/{s['channels']}" if s else "-"


def speed(ctx: Context, model: str, specs: tuple[str, ...]) -> list[Row]:
    source, _, feeds = compression.source(model, ctx)
    folder = ctx.folder(model)
    rows = [compression.attempt(model, spec, lambda i=i, spec=spec: compression.build(
        model, source, spec, folder / f"v{i}.onnx")) for i, spec in enumerate(("", *specs))]
    return [dict(r, part="speed") for r in compression.timed(ctx, rows, feeds)]


def accuracy(ctx: Context, model: str, templates: tuple[str, ...]) -> list[Row]:
    source, data, _ = compression.source(model, ctx)
    folder = ctx.folder(model)
    specs = [""] + [t.format(p=f",importance={i},refit={str(c).lower()}")
                    for t in templates for i in ("magnitude", "activation") for c in (False, True)]
    rows = [compression.attempt(model, spec, lambda i=i, spec=spec: compression.build(
        model, source, spec, folder / f"a{i}.onnx", data if spec else None))
        for i, spec in enumerate(specs)]
    return [dict(r, part="accuracy") for r in compression.with_metrics(ctx, rows)]


def measure(ctx: Context) -> list[Row]:
    fast, good = (SMOKE_SPEED, SMOKE_ACCURACY) if ctx.smoke else (SPEED, ACCURACY)
    rows = []
    for model in ctx.models:
        if model in fast:
            rows += speed(ctx, model, fast[model])
        if model in good:
            rows += accuracy(ctx, model, good[model])
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    base: dict[str, float] = {}

    def accuracy_cells(r: Row) -> tuple[str, ...]:
        m, minilm = r["metrics"], r["model"] == "minilm"
        main = m["spearman"] if minilm else m["value"]
        rest = ((m["mean_cosine"], m["retrieval_agreement"]) if minilm
                else (m["shifted"], m["logits_rel_l2"]))
        return (removed(r), f"{r['seconds']:.2f}", f"{main:.4f}",
                compression.change(main, base.setdefault(r["model"], main), r["model"]),
                *(num(v, ".4f") for v in rest))

    speed_header = ("model", "variant", "channels removed", "params (M)",
                    *compression.TIMING_HEADER, "cosine vs unpruned")
    accuracy_header = ("model", "variant", "removed", "prune s", "accuracy / spearman",
                       "vs unpruned", "shifted acc. / mean cos", "logits rel-L2 / retrieval")
    return {
        "speed": table(speed_header, [r for r in rows if r["part"] == "speed"], lambda r: (
            removed(r), f"{r['parameters'] / 1e6:.2f}", *compression.timing_cells(r))),
        "accuracy without retraining": table(
            accuracy_header, [r for r in rows if r["part"] == "accuracy"], accuracy_cells),
    }


SUITE = Suite("prune", __doc__, models=("resnet50", "resnet18", "mobilenet_v2", "digits_cnn",
                                        "digits_vit", "minilm"),
              smoke_models=("digits_cnn",), measure=measure, tables=tables,
              repeats=40)
