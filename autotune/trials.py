"""The trials of a search: each candidate pipeline compiled, judged against the budget and
measured against the original, in an Optuna study stored in SQLite inside the search's
folder, so that an interrupted search resumes without repeating a finished trial and a
finished one can be reported again.

The study has two objectives: the candidate's cost relative to the original's (``size``:
file bytes; ``latency``: median time at ``batch``, the two measured interleaved in one
run), minimised, and the budget's slack (:meth:`Budget.slack`), maximised. Optuna's NSGA-II
sampler with the search's seed picks the settings; a pipeline already tried is answered
from the store, not compiled again. A candidate that does not compile (a setting the model
refuses, such as more token merging than it has tokens) is a failed trial with its
one-line reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import optuna

from onnxpress.api import bench, compile
from onnxpress.autotune.budget import Budget
from onnxpress.autotune.judge import judge, metric_of
from onnxpress.autotune.space import Space, plan
from onnxpress.backends.onnx_writer import save
from onnxpress.errors import BadInputError

__all__ = ["Candidate", "Search"]

Objective = Literal["size", "latency"]
STUDY = "onnxpress-search"
#: the distinct warnings a candidate's compile logged that its trial keeps
MAX_SAID = 5


@dataclasses.dataclass(frozen=True)
class Candidate:
    number: int
    pipeline: str
    value: float | None  # the budget's metric
    holds: bool
    slack: float | None
    cost: float | None  # relative to the original (< 1: better)
    rejected: str | None  # why it did not compile, if it did not
    path: str | None


class _Rejected(Exception):
    pass


class Search:
    """A search of ``model`` on ``data`` within ``budget``, kept in ``folder``."""

    def __init__(self, model: str | os.PathLike, data: str | os.PathLike, budget: Budget,
                 folder: str | os.PathLike, *, objective: Objective = "latency",
                 calibration: str | os.PathLike | None = None, seed: int = 0,
                 batch: int = 8) -> None:
        self.model, self.data, self.budget = Path(model), data, budget
        self.folder, self.objective, self.seed, self.batch = Path(folder), objective, seed, batch
        self.calibration = None if calibration is None else os.fspath(calibration)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.space: Space = plan(self.model)
        self.original = metric_of(budget, self.model, self.model, data)
        optuna.logging.set_verbosity(logging.WARNING)
        self.study = optuna.create_study(
            study_name=STUDY, storage=f"sqlite:///{self.folder / 'trials.db'}",
            load_if_exists=True, directions=["minimize", "maximize"],
            sampler=optuna.samplers.NSGAIISampler(seed=seed))

    def run(self, trials: int) -> list[Candidate]:
        """Run until ``trials`` trials have finished (those already stored count)."""
        done = sum(t.state.is_finished() for t in self.study.trials)
        if trials > done:
            self.study.optimize(self._trial, n_trials=trials - done, catch=(_Rejected,))
        return self.candidates()

    def candidates(self) -> list[Candidate]:
        return [_candidate(t) for t in self.study.trials if t.state.is_finished()]

    def front(self) -> list[Candidate]:
        """The candidates within the budget that no other one within it beats on both cost
        and slack, cheapest first."""
        held = [c for c in self.candidates() if c.holds and c.cost is not None]
        front = [c for c in held if not any(
            o.cost <= c.cost and o.slack >= c.slack and (o.cost, o.slack) != (c.cost, c.slack)
            for o in held)]
        return sorted(front, key=lambda c: (c.cost, -c.slack, c.number))

    def _trial(self, trial: optuna.Trial) -> tuple[float, float]:
        settings = {k.family: trial.suggest_categorical(k.family, list(k.values))
                    for k in self.space.knobs}
        pipeline = self.space.pipeline(settings)
        trial.set_user_attr("pipeline", pipeline)
        for earlier in self.study.trials:
            if earlier.number != trial.number and earlier.user_attrs.get("pipeline") == pipeline \
                    and earlier.state.is_finished():
                return self._repeat(trial, earlier)
        path = self.folder / "candidates" / f"{trial.number:04d}.onnx"
        path.parent.mkdir(exist_ok=True)
        said: list[str] = []
        try:
            with _collected(said):
                save(compile(self.model, pipeline, calibration=self.calibration,
                             progress=False), path)
        except BadInputError as error:
            trial.set_user_attr("rejected", str(error))
            raise _Rejected(str(error)) from None
        trial.set_user_attr("said", list(dict.fromkeys(said))[:MAX_SAID])
        verdict = judge(self.budget, path, self.model, self.data, self.original)
        cost = self._cost(path)
        trial.set_user_attr("path", os.fspath(path))
        for key, value in (("value", verdict.value), ("holds", verdict.holds),
                           ("slack", verdict.slack), ("cost", cost)):
            trial.set_user_attr(key, value)
        return cost, verdict.slack

    def _repeat(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial
                ) -> tuple[float, float]:
        for key, value in earlier.user_attrs.items():
            trial.set_user_attr(key, value)
        if "rejected" in earlier.user_attrs:
            raise _Rejected(earlier.user_attrs["rejected"])
        return earlier.user_attrs["cost"], earlier.user_attrs["slack"]

    def _cost(self, path: Path) -> float:
        if self.objective == "size":
            return _bytes(path) / _bytes(self.model)
        rows = bench([self.model, path], batch=self.batch, repeats=20, progress=False)
        return rows[1]["median_ms"] / rows[0]["median_ms"]


class _Collector(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def _collected(into: list[str]) -> Iterator[None]:
    """The passes' warnings during one candidate's compile go to ``into`` (the trial's
    record), not to the console, where a search of many candidates would repeat them."""
    logger = logging.getLogger("onnxpress")
    handler, propagate = _Collector(into), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _bytes(path: Path) -> int:
    """The model file and its external data beside it."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _candidate(trial: optuna.trial.FrozenTrial) -> Candidate:
    attrs: dict[str, Any] = trial.user_attrs
    return Candidate(trial.number, attrs.get("pipeline", ""), attrs.get("value"),
                     bool(attrs.get("holds", False)), attrs.get("slack"), attrs.get("cost"),
                     attrs.get("rejected"), attrs.get("path"))
