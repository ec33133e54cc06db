"""``onnxpress.search``: the trials run to the end, the front, the chosen model written."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.judge import metric_of
from onnxpress.autotune.report import write_report
from onnxpress.autotune.trials import Candidate, Objective, Search
from onnxpress.autotune.workers import workers_for
from onnxpress.backends.files import replace_atomically
from onnxpress.errors import BadInputError

__all__ = ["SearchResult", "search"]


@dataclasses.dataclass
class SearchResult:
    budget: str
    objective: str
    original: float  # the original model's metric on the data
    candidates: list[Candidate]
    front: list[Candidate]  # within the budget, cheapest first
    chosen: Candidate | None  # the cheapest within the budget
    folder: Path
    notes: list[str]
    test: dict[str, Any] | None = None  # the original's and the chosen's metric on ``test``

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["folder"] = os.fspath(self.folder)
        return out


def search(model: str | os.PathLike, data: str | os.PathLike, budget: str, *,
           folder: str | os.PathLike, objective: Objective = "latency", trials: int = 24,
           seed: int = 0, calibration: str | os.PathLike | None = None, batch: int = 8,
           output: str | os.PathLike | None = None, workers: int = 1,
           ray: str | bool | None = None, progress: bool | None = None,
           test: str | os.PathLike | None = None,
           input_shapes: dict[str, tuple[int, ...]] | None = None,
           dims: dict[str, int] | None = None) -> SearchResult:
    """Search pipelines over every family ``model`` offers for the cheapest one within
    ``budget`` on ``data`` (a validation set); ``folder`` keeps the trials (rerun to
    resume), ``front.json`` and the report (:mod:`.report`); ``output`` receives the chosen
    model; ``test``: a data set the original and the chosen model are scored on at the end,
    which the search never looked at.

    ``workers``: candidates built by that many local processes; ``ray``: by Ray tasks on
    the cluster at that address (True: a local instance of ``workers`` CPUs). Either way
    the candidates and their metrics are the same; latencies are timed here, one at a
    time, on random inputs at ``batch`` shaped by ``input_shapes`` and ``dims`` (as
    :func:`onnxpress.bench`). ``progress``: a bar with the best so far (None: when stderr
    is a terminal)."""
    if trials < 1:
        raise BadInputError(f"search: trials={trials}; give at least 1")
    if objective not in ("latency", "size"):
        raise BadInputError(f"search: objective {objective!r}; give latency or size")
    parsed = parse_budget(budget)
    runner = Search(model, data, parsed, folder, objective=objective, calibration=calibration,
                    seed=seed, batch=batch, input_shapes=input_shapes, dims=dims)
    with workers_for(workers, ray) as pool:
        candidates = runner.run(trials, pool, progress=progress)
    front = runner.front()
    chosen = front[0] if front else None
    if chosen is not None and output is not None:
        assert chosen.path is not None
        chosen_bytes = Path(chosen.path).read_bytes()
        replace_atomically(output, lambda tmp: tmp.write_bytes(chosen_bytes),
                           reading=[model, data])
    scored = None
    if test is not None and chosen is not None:
        scored = {"data": os.fspath(test), "original": metric_of(parsed, model, model, test),
                  "chosen": metric_of(parsed, chosen.path, model, test)}
    result = SearchResult(parsed.text, objective, runner.original, candidates, front, chosen,
                          Path(folder), list(runner.space.notes), scored)
    summary = {"model": os.fspath(model), "data": os.fspath(data), "budget": parsed.text,
               "objective": objective, "metric": parsed.metric, "original": runner.original,
               "test": scored, "raced": runner.raced()}
    write_report(Path(folder), summary, candidates, front, chosen, runner.space,
                 runner.job.calibration, parsed.limit(runner.original))
    text = json.dumps(result.as_dict(), indent=1) + "\n"
    replace_atomically(Path(folder) / "front.json", lambda tmp: tmp.write_text(text))
    return result
