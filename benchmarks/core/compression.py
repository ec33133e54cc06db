"""What the one-shot compression suites (``prune``, ``lowrank``, ``tome``, ...) share:
their models and calibration data, building a variant with onnxpress, timing variants side
by side, and scoring them.

Speed parts time ``cleanup`` (the baseline: the exported model as ORT would run it anyway)
against ``cleanup,SPEC`` variants on the model's comparison inputs, interleaved at batch 1
(``--repeats`` rounds) and batch 8 (a fraction of those), with speed-up = baseline median /
variant median and the first output's cosine against the baseline on 8 inputs (a sanity
number only where the weights are random).

Calibration: the digits models read ``digits_calibration.npz`` (disjoint from the test
split), one image a batch (the passes read up to 256); MiniLM the 320 sentences of
``minilm_calibration.json`` (written apart from the evaluation set), each its own unpadded
batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import onnxpress

from . import subjects
from .quality import scored
from .suite import Context, Row, first_line, log, ok, row, step
from .timing import fewer, time_batches


def calibration(model: str, smoke: bool = False) -> Any:
    """The passes' calibration data for ``model`` (None for the random-weight zoo); a smoke
    run's digits models read 32 images in two batches (the activation-aware passes take
    minutes over all 128, one a batch, on a loaded machine)."""
    if model == "minilm":
        from onnxpress.models.minilm import calibration_batches

        return calibration_batches()
    if model not in subjects.DIGITS:
        return None
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    if smoke:
        with np.load(CALIBRATION_NPZ) as arrays:
            return [{"image": arrays["image"][i : i + 16]} for i in (0, 16)]
    return onnxpress.CalibrationData(CALIBRATION_NPZ)


def source(model: str, ctx: Context) -> tuple[Path, Any, dict[str, np.ndarray]]:
    """(fp32 file, calibration data, comparison inputs) of ``model``."""
    subject = subjects.subject(model, ctx.cache)
    return subject.fp32, calibration(model, ctx.smoke), subject.compare


def build(model: str, source: Path | str, spec: str, path: Path, data: Any = None,
          stats_of: str | None = None, cleanup: bool = True) -> Row:
    """Compile ``cleanup[,spec]`` to ``path`` into a row with the parameters and file size,
    and the stats, wall time and notes of the last pass (or the last one named
    ``stats_of``)."""
    passes = ",".join(filter(None, ("cleanup" if cleanup else "", spec)))
    model_ir, report = onnxpress.compile(source, passes, calibration=data, progress=False,
                                         return_report=True)
    onnxpress.save(model_ir, path)
    named = [r for r in report.passes if r.name == stats_of]
    record = named[-1] if named else report.passes[-1]
    real = bool(spec) or not cleanup
    return row(model, spec or "cleanup", path=str(path), parameters=record.parameters_after,
               bytes=path.stat().st_size, stats=record.stats if real else {},
               seconds=record.seconds if real else 0.0, notes=record.notes if real else [])


def attempt(model: str, spec: str, make: Callable[[], Row]) -> Row:
    """``make()``'s row, or a row with the error that stopped it."""
    failed = row(model, spec or "cleanup", stats={}, seconds=0.0, notes=[])
    with step(failed, "build"):
        return make()
    return failed


def timed(ctx: Context, rows: list[Row], feeds: dict[str, np.ndarray],
          b8_divisor: int = 2) -> list[Row]:
    """Time the rows that built (the first row is the baseline) interleaved at batch 1 and
    8; add medians, p10/p90, speed-ups and the first output's cosine against the baseline
    on 8 inputs."""
    good = ok(rows)
    if not good or good[0] is not rows[0]:
        return rows  # no baseline: nothing to compare with
    try:
        _time(ctx, good, feeds, b8_divisor)
    except Exception as error:  # noqa: BLE001 - the rows say it, the suite goes on
        for r in good:
            r.update(status="error", error=f"timing: {first_line(error)}")
    return rows


def _time(ctx: Context, rows: list[Row], feeds: dict[str, np.ndarray], b8_divisor: int) -> None:
    paths = {r["variant"]: r["path"] for r in rows}
    rounds = {1: ctx.repeats, 8: fewer(ctx.repeats, b8_divisor)}
    found = time_batches(paths, feeds, repeats=ctx.repeats, threads=ctx.threads,
                         batches=rounds)
    sample = [{k: v[:8] for k, v in feeds.items()}]
    for r in rows:
        for batch, timing in found.items():
            mine, base = timing[r["variant"]], timing[rows[0]["variant"]]
            r.update({f"b{batch}_ms": mine["median_ms"],
                      f"b{batch}_speedup": base["median_ms"] / mine["median_ms"],
                      f"b{batch}_p10_p90_ms": [mine["p10_ms"], mine["p90_ms"]],
                      f"b{batch}_rounds": mine["repeats"]})
        r["cosine"] = onnxpress.compare(rows[0]["path"], r["path"], sample,
                                        batches=1)[0]["cosine"]
        log(f"  {r['model']} {r['variant']}: b1 {r['b1_ms']:.2f} ms ({r['b1_speedup']:.2f}x)")


def with_metrics(ctx: Context, rows: list[Row]) -> list[Row]:
    """Each row's ``metrics`` (:func:`benchmarks.core.quality.scored`; a smoke run leaves
    ``digits-shifted`` out); the digits logits' error is against the first row's."""
    reference = None
    for r in ok(rows):
        with step(r, "evaluate"):
            r["metrics"], logits = scored(r["path"], r["model"], reference,
                                          shifted=not ctx.smoke)
            reference = logits if reference is None else reference
            log(f"  {r['model']} {r['variant']}: {r['metrics']['value']:.4f} "
                f"({r['seconds']:.1f} s)")
    return rows


def timing_cells(r: Row) -> tuple[str, ...]:
    """A timed row's cells: file MB, b1 ms, b1 speed-up, b8 ms, b8 speed-up, cosine."""
    return (f"{r['bytes'] / 1e6:.1f}", f"{r['b1_ms']:.2f}", f"{r['b1_speedup']:.2f}x",
            f"{r['b8_ms']:.1f}", f"{r['b8_speedup']:.2f}x", f"{r['cosine']:.4f}")


TIMING_HEADER = ("file MB", "b1 ms", "b1 speed-up", "b8 ms", "b8 speed-up")


def change(value: float, base: float, model: str) -> str:
    """``value`` against the dense model's: points for accuracy, plain for MiniLM."""
    delta = value - base
    return f"{delta:+.4f}" if model == "minilm" else f"{100 * delta:+.2f} pt"
