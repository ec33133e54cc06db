"""``search``: ``onnxpress.search`` against the hand-written pipelines the README quotes,
measured side by side. Per model, a search (latency at batch 8, ``--set trials=N``, two
local worker processes) spends one budget across every family the model offers; then the
original, the hand-written pipeline, the searched model and each family's best candidate on
its own are timed interleaved in one run at batch 8 and scored on the search's data (and
the test set, where the model has one apart from it).

- ``digits_vit``: ``top1>=-1pt`` on ``digits-validation`` (134 training-split images held
  out of training), reported on the test split ``digits`` too, calibrated on
  ``digits_calibration.npz`` (128 other training-split images) as the README's command is;
  hand-written ``tome(r=10),int8``;
- ``minilm``: ``spearman>=0.99`` on ``minilm-texts``, calibrated on the 320 sentences of
  ``minilm_calibration.json`` (written apart from that set, padded to the longest);
  hand-written ``int8``; timed at 128 tokens;
- ``deit_small`` (ViT-S/16, seeded random weights): ``cosine>=0.995`` against fp32 on the
  zoo's comparison images, calibrated on 64 other seeded standard-normal images;
  hand-written ``tome(r=13),int8``.

    python -m benchmarks.run --suite search [--models digits_vit] [--set trials=24]

``--smoke``: the digits ViT, 4 trials, 3 timing rounds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxpress.api import bench, compile
from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.judge import metric_of
from onnxpress.autotune.report import alone
from onnxpress.autotune.run import search
from onnxpress.autotune.space import plan
from onnxpress.backends.onnx_writer import save

from ..core.subjects import subject
from ..core.suite import Context, Row, Suite, log, row
from ..core.tables import table


@dataclasses.dataclass(frozen=True)
class Case:
    budget: str
    data: str | None  # a named set; None: the subject's comparison inputs as an .npz
    hand: str
    dims: dict[str, int] = dataclasses.field(default_factory=dict)
    test: str | None = None  # a set the search never sees, scored at the end
    calibration: Callable[[Any], dict[str, np.ndarray]] | None = None  # default: the subject's


#: ViT-S's calibration: so many seeded standard-normal images
CALIBRATION_IMAGES, CALIBRATION_SEED = 64, 1


def _digits_calibration(_: Any) -> dict[str, np.ndarray]:
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    with np.load(CALIBRATION_NPZ) as arrays:
        return {name: arrays[name] for name in arrays.files}


def _minilm_calibration(_: Any) -> dict[str, np.ndarray]:
    from onnxpress.models.minilm import calibration_sentences, tokenize

    return tokenize(calibration_sentences())


def _normal_images(subject_: Any) -> dict[str, np.ndarray]:
    """64 seeded standard-normal images (numpy's generator, apart from the zoo's comparison
    images, which torch seeds): with the zoo's 16, refits of a random-weight ViT-S overfit
    (heads 0.17 with int8: cosine 0.9938 on 16 images, 0.9966 on 64)."""
    generator = np.random.default_rng(CALIBRATION_SEED)
    return {name: generator.standard_normal((CALIBRATION_IMAGES, *array.shape[1:]),
                                            np.float32)
            for name, array in subject_.compare.items()}


CASES = {
    "digits_vit": Case("top1>=-1pt", "digits-validation", "cleanup,tome(r=10),int8",
                       test="digits", calibration=_digits_calibration),
    "minilm": Case("spearman>=0.99", "minilm-texts", "int8", {"sequence": 128},
                   calibration=_minilm_calibration),
    "deit_small": Case("cosine>=0.995", None, "cleanup,tome(r=13),int8",
                       calibration=_normal_images),
}
BATCH = 8


def measure(ctx: Context) -> list[Row]:
    rows = []
    for name in ctx.models:
        case, subject_ = CASES[name], subject(name, ctx.cache)
        work = ctx.folder(name)
        calibration = work / "calibration.npz"
        np.savez(calibration, **(case.calibration(subject_) if case.calibration else {
            k: np.concatenate([b[k] for b in subject_.calibration])
            for k in subject_.calibration[0]}))
        data = case.data
        if data is None:
            data = str(work / "data.npz")
            np.savez(data, **subject_.compare)
        trials = int(ctx.options["trials"])
        started = time.perf_counter()
        result = search(subject_.fp32, data, case.budget, folder=work / "search",
                        trials=trials, calibration=calibration, batch=BATCH,
                        workers=int(ctx.options["workers"]), dims=case.dims or None,
                        progress=False)
        seconds = time.perf_counter() - started
        log(f"{name}: {len(result.candidates)} trials in {seconds:.0f} s")
        hand = work / "hand.onnx"
        save(compile(subject_.fp32, case.hand, calibration=str(calibration), progress=False),
             hand)
        budget = parse_budget(case.budget)
        variants = {"fp32": subject_.fp32, f"hand: {case.hand}": hand}
        if result.chosen is not None:
            variants[f"searched: {result.chosen.pipeline}"] = Path(result.chosen.path)
        for family, best in alone(result.candidates, plan(subject_.fp32)).items():
            if best is not None:
                variants[f"{family} alone: {best.pipeline}"] = Path(best.path)
        timed = bench(list(variants.values()), batch=BATCH, repeats=ctx.repeats,
                      progress=False, dims=case.dims or None)
        fp32_ms = timed[0]["median_ms"]
        for (label, path), timing in zip(variants.items(), timed, strict=True):
            value = metric_of(budget, path, subject_.fp32, data)
            test = {} if case.test is None else {
                "test_metric": round(metric_of(budget, path, subject_.fp32, case.test), 5)}
            rows.append(row(name, label, median_ms=round(timing["median_ms"], 3),
                            speedup=round(fp32_ms / timing["median_ms"], 3),
                            metric=round(value, 5),
                            within=budget.holds(value, result.original),
                            search_s=round(seconds), trials=len(result.candidates), **test))
        for c in result.front:
            rows.append(row(name, f"front {c.number}: {c.pipeline}", cost=round(c.cost, 3),
                            metric=round(c.value, 5), within=True))
    return rows


def tables(rows: list[Row]) -> dict[str, str]:
    timed = [r for r in rows if "median_ms" in r]
    front = [r for r in rows if "cost" in r]
    return {
        "side by side at batch 8": table(
            ("model", "variant", "ms", "vs fp32", "metric", "within", "test metric"), timed,
            lambda r: (r["median_ms"], f"{r['speedup']:.2f}x", r["metric"],
                       "yes" if r["within"] else "no", r.get("test_metric", "-")),
            names=("model", "variant")),
        "fronts (cost as the search measured it)": table(
            ("model", "trial: pipeline", "cost", "metric"), front,
            lambda r: (r["cost"], r["metric"]), names=("model", "variant")),
    }


SUITE = Suite("search", __doc__, models=tuple(CASES), smoke_models=("digits_vit",),
              measure=measure, tables=tables, repeats=30,
              options={"trials": 24, "workers": 2}, smoke_options={"trials": 4})
