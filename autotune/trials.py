"""The trials of a search: each candidate pipeline compiled, judged against the budget and
measured against the original, in an Optuna study stored in SQLite inside the search's
folder, so that an interrupted search resumes without repeating a finished trial and a
finished one can be reported again.

The study has two objectives: the candidate's cost relative to the original's (``size``:
file bytes; ``latency``: median time at ``batch``, the two measured interleaved in one
run), minimised, and the budget's slack (:meth:`Budget.slack`), maximised.

Trials go in rounds. The first ones are :mod:`.sweep`'s: each family alone, bisected to its
strongest setting within the budget, then the combinations that spend the budget across the
families by those sensitivities. Then Optuna's NSGA-II sampler, seeded by the search's seed
and the number of trials finished, proposes ``round_size`` settings a round, bred from all
the trials before (the sweep's included), each family held to its limit. The new pipelines
among a round's are built (compiled and judged) by the workers (:mod:`.workers`: this
process, local processes or Ray tasks), in parallel; then the driver times each candidate
against the original, one at a time, with no build running beside it; then the round is
told to the study. So the candidates depend on the seed and the round size, not on how many
workers built them, and a round cut short by an interruption is proposed again, the same,
on the next run. A pipeline already tried is answered from the store, not built again; a candidate
that does not compile (a setting the model refuses, such as more token merging than it has
tokens) is a failed trial with its one-line reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from onnxpress.api import bench
from onnxpress.autotune.budget import Budget
from onnxpress.autotune.candidate import Built, Job
from onnxpress.autotune.judge import metric_of
from onnxpress.autotune.space import Space, plan
from onnxpress.autotune.sweep import capped, plausible, proposals
from onnxpress.autotune.workers import InProcess, Workers
from onnxpress.backends.files import replace_atomically

__all__ = ["Candidate", "Search"]

Objective = Literal["size", "latency"]
STUDY = "onnxpress-search"
#: trials proposed together and built in parallel
ROUND = 4
#: NSGA-II's generation: the first is drawn at random, later ones bred from the front
POPULATION = 8
#: the sampler's proposals asked for one trial, at most, while they look doomed
ASKS = 20
#: a cost's timing: about this many seconds of the original per model, in so many runs
TIMING_SECONDS = 1.0
REPEATS = (20, 200)
#: the final race: candidates within this factor of the cheapest one's cost, at most this
#: many, timed over this many times a trial's runs
RACE_SPREAD = 1.5
RACE_SIZE = 6
RACE_REPEATS = 2


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
    said: tuple[str, ...] = ()  # what its compile warned
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # family -> value


class Search:
    """A search of ``model`` on ``data`` within ``budget``, kept in ``folder``."""

    def __init__(self, model: str | os.PathLike, data: str | os.PathLike, budget: Budget,
                 folder: str | os.PathLike, *, objective: Objective = "latency",
                 calibration: str | os.PathLike | None = None, seed: int = 0,
                 batch: int = 8, round_size: int = ROUND,
                 input_shapes: dict[str, tuple[int, ...]] | None = None,
                 dims: dict[str, int] | None = None) -> None:
        self.model, self.data, self.budget = Path(model), os.fspath(data), budget
        self.folder, self.objective, self.seed, self.batch = Path(folder), objective, seed, batch
        self.round_size = round_size
        self.repeats: int | None = None  # timing runs per model, from the original's speed
        self.timing = {"input_shapes": input_shapes, "dims": dims}  # the random inputs timed
        calibration = None if calibration is None else os.fspath(calibration)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.space: Space = plan(self.model, calibrated=calibration is not None)
        self.original = metric_of(budget, self.model, self.model, self.data)
        self.allowance = budget.slack(self.original, self.original)
        self.job = Job(os.fspath(self.model), self.data, calibration, budget, self.original)
        self.distributions = {k.family: CategoricalDistribution(list(k.values))
                              for k in self.space.knobs}
        optuna.logging.set_verbosity(logging.WARNING)
        self.study = optuna.create_study(
            study_name=STUDY, storage=f"sqlite:///{self.folder / 'trials.db'}",
            load_if_exists=True, directions=["minimize", "maximize"],
            sampler=self._sampler(0))

    def run(self, trials: int, workers: Workers | None = None,
            progress: bool | None = False) -> list[Candidate]:
        """Run until ``trials`` trials have finished (those already stored count)."""
        from tqdm import tqdm

        self._abandon_interrupted()
        workers = workers or InProcess()
        with tqdm(total=trials, initial=min(trials, len(self.candidates())), unit="trial",
                  desc="search", disable=None if progress is None else not progress,
                  leave=False) as bar:
            while (done := len(self.candidates())) < trials:
                self._round(trials - done, workers)
                bar.update(len(self.candidates()) - done)
                best = self.front()
                if best:
                    bar.set_postfix_str(f"best {best[0].cost:.3f}x: {best[0].pipeline}")
        if self.objective == "latency":
            self._race()
        return self.candidates()

    def candidates(self) -> list[Candidate]:
        """Every finished trial: built and measured, or rejected with its reason; a
        candidate in the final race carries the race's cost, and one within the budget
        left out of it costs at least the race's slowest: it was measured slower than every
        runner, and its own cost, timed in another phase of the machine's load, does not
        compare with theirs (on the digits ViT the 7th fastest, left out of a race of 6
        that ran in a slow phase, came out cheapest by its trial's 0.72 against the race's
        0.73 to 0.81, and was chosen)."""
        measured = self._measured_candidates()
        numbers = {int(k): v for k, v in self.study.user_attrs.get("race", {}).get(
            "costs", {}).items()}
        # a pipeline proposed again carries its race cost too
        raced = {c.pipeline: numbers[c.number] for c in measured if c.number in numbers}
        floor = max(raced.values(), default=0.0)

        def cost(c: Candidate) -> float | None:
            if c.pipeline in raced:
                return raced[c.pipeline]
            return max(c.cost, floor) if c.holds and c.cost is not None else c.cost

        return [dataclasses.replace(c, cost=cost(c)) for c in measured]

    def raced(self) -> list[int]:
        """The trials of the final race, whose costs were timed together."""
        return list(self.study.user_attrs.get("race", {}).get("trials", []))

    def _race(self) -> None:
        """Time the fastest candidates within the budget again, all interleaved in one run.

        Each trial's cost is its own run beside the original, and on a shared machine a
        phase of contention shifts such a ratio by up to 15% (MiniLM's int8 measured 0.40
        to 0.47 of fp32 in five runs of a minute); candidates raced together share the
        phases, so their order is the machine's best answer. The race (those within
        ``RACE_SPREAD`` of the cheapest, at most ``RACE_SIZE``) is stored in the study and
        run again only when its field changes."""
        held = {c.pipeline: c for c in reversed(self._measured_candidates())
                if c.holds and c.cost is not None and c.path is not None}
        field = sorted(held.values(), key=lambda c: (c.cost, c.number))
        field = [c for c in field if c.cost <= field[0].cost * RACE_SPREAD][:RACE_SIZE]
        numbers = sorted(c.number for c in field)
        stored = self.study.user_attrs.get("race", {})
        if len(field) < 2 or stored.get("trials") == numbers:
            return
        rows = bench([self.model, *(Path(c.path) for c in field)], batch=self.batch,
                     repeats=RACE_REPEATS * self._repeats(), progress=False, **self.timing)
        costs = {str(c.number): row["median_ms"] / rows[0]["median_ms"]
                 for c, row in zip(field, rows[1:], strict=True)}
        self.study.set_user_attr("race", {"trials": numbers, "costs": costs})

    def _measured_candidates(self) -> list[Candidate]:
        """The candidates with the costs their trials measured (the race's input)."""
        return [_candidate(t) for t in self.study.trials if _finished(t)]

    def front(self) -> list[Candidate]:
        """The candidates within the budget that no other one within it beats on both cost
        and slack, cheapest first; a pipeline proposed again is listed once, as its first
        trial."""
        held = list({c.pipeline: c for c in reversed(self.candidates())
                     if c.holds and c.cost is not None}.values())
        front = [c for c in held if not any(
            o.cost <= c.cost and o.slack >= c.slack and (o.cost, o.slack) != (c.cost, c.slack)
            for o in held)]
        return sorted(front, key=lambda c: (c.cost, -c.slack, c.number))

    def _sampler(self, finished: int) -> optuna.samplers.BaseSampler:
        """Seeded by the search's seed and the trials finished so far, so that a round
        proposes the same settings whether it runs first time or after an interruption."""
        return optuna.samplers.NSGAIISampler(population_size=POPULATION,
                                             seed=self.seed * 1_000_003 + finished)

    def _round(self, left: int, workers: Workers) -> None:
        """One round of at most ``left`` trials: the sweep's next proposals, all of them
        (every family's probe built in parallel), or ``round_size`` of the sampler's."""
        finished = self._measured_candidates()
        self.study.sampler = self._sampler(len(finished))
        planned = proposals(self.space, finished, self.allowance)[:left]
        for settings in planned:
            self.study.enqueue_trial(settings)
        asked = [self._ask(bool(planned), finished)
                 for _ in range(len(planned) or min(self.round_size, left))]
        pipelines = [self.space.pipeline(t.params) for t in asked]
        known = {c.pipeline: c for c in self._measured_candidates()}
        new = list(dict.fromkeys(p for p in pipelines if p not in known))
        paths = {p: self.folder / "candidates" / f"{asked[pipelines.index(p)].number:04d}.onnx"
                 for p in new}
        (self.folder / "candidates").mkdir(exist_ok=True)
        built = dict(zip(new, workers.map(self.job, [(p, os.fspath(paths[p])) for p in new]),
                         strict=True))
        measured = {p: self._measured(b, paths[p]) for p, b in built.items()}
        for trial, pipeline in zip(asked, pipelines, strict=True):
            attrs = measured.get(pipeline) or _attrs(known[pipeline])
            trial.set_user_attr("pipeline", pipeline)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if attrs.get("rejected") is not None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                # NSGA-II ranks a candidate outside the budget behind every one within it,
                # however cheap, so it breeds from the budget's side of the front
                trial.set_constraint("budget", -attrs["slack"])
                self.study.tell(trial, [attrs["cost"], attrs["slack"]])

    def _ask(self, planned: bool, finished: list[Candidate]) -> optuna.trial.Trial:
        """The next trial: the queued proposal, or the sampler's held to the families'
        limits (the sampler's own trial is closed as pruned, not a candidate, and the
        capped settings asked in its place); a proposal the sweep predicts far outside the
        budget is closed as pruned and the sampler asked again, ``ASKS`` times at most."""
        trial = self.study.ask(self.distributions)
        if planned:
            return trial
        for attempt in range(ASKS):
            settings = capped(self.space, trial.params, finished)
            if attempt == ASKS - 1 or plausible(self.space, settings, finished,
                                                self.allowance):
                break
            self.study.tell(trial, state=TrialState.PRUNED)
            trial = self.study.ask(self.distributions)
        if settings == trial.params:
            return trial
        self.study.tell(trial, state=TrialState.PRUNED)
        self.study.enqueue_trial(settings)
        return self.study.ask(self.distributions)

    def _measured(self, built: Built, path: Path) -> dict[str, Any]:
        """A built candidate's record: written to ``path`` if a remote worker sent bytes,
        and timed (or sized) against the original here."""
        if built.rejected is not None:
            return {"rejected": built.rejected}
        if built.model is not None:
            replace_atomically(path, lambda tmp: tmp.write_bytes(built.model))
        return {"value": built.value, "holds": built.holds, "slack": built.slack,
                "said": list(built.said), "path": os.fspath(path), "cost": self._cost(path)}

    def _abandon_interrupted(self) -> None:
        """Trials asked but never told (a run stopped mid-round), and proposals queued but
        never asked, are closed as failed without a reason: they are not candidates, and
        their round is proposed again."""
        for trial in self.study.trials:
            if trial.state == TrialState.RUNNING:
                self.study.tell(trial.number, state=TrialState.FAIL)
        while any(t.state == TrialState.WAITING for t in self.study.trials):
            self.study.tell(self.study.ask(self.distributions), state=TrialState.FAIL)

    def _cost(self, path: Path) -> float:
        if self.objective == "size":
            return _bytes(path) / _bytes(self.model)
        rows = bench([self.model, path], batch=self.batch, repeats=self._repeats(),
                     progress=False, **self.timing)
        return rows[1]["median_ms"] / rows[0]["median_ms"]

    def _repeats(self) -> int:
        """Runs per model for a cost: enough for ``TIMING_SECONDS`` of the original (a
        model of a few milliseconds is noisy over 20 runs: on the digits ViT, a candidate
        measured 0.78x over 20 runs and 0.66x over 60), within ``REPEATS``."""
        if self.repeats is None:
            ms = bench([self.model], batch=self.batch, repeats=5, progress=False,
                       **self.timing)[0]["median_ms"]
            self.repeats = max(REPEATS[0], min(REPEATS[1], round(TIMING_SECONDS * 1e3 / ms)))
        return self.repeats


def _finished(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and "rejected" in trial.user_attrs)


def _attrs(candidate: Candidate) -> dict[str, Any]:
    if candidate.rejected is not None:
        return {"rejected": candidate.rejected}
    return {"value": candidate.value, "holds": candidate.holds, "slack": candidate.slack,
            "said": list(candidate.said), "path": candidate.path, "cost": candidate.cost}


def _bytes(path: Path) -> int:
    """The model file and its external data beside it."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _candidate(trial: optuna.trial.FrozenTrial) -> Candidate:
    attrs: dict[str, Any] = trial.user_attrs
    return Candidate(trial.number, attrs.get("pipeline", ""), attrs.get("value"),
                     bool(attrs.get("holds", False)), attrs.get("slack"), attrs.get("cost"),
                     attrs.get("rejected"), attrs.get("path"), tuple(attrs.get("said", ())),
                     dict(trial.params))
