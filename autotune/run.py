"""``onnxpress.search``: the trials run to the end, the front, the chosen model written."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.trials import Candidate, Objective, Search
from onnxpress.autotune.workers import workers_for
from onnxpress.backends.onnx_writer import save
from onnxpress.errors import BadInputError
from onnxpress.frontends.onnx_loader import load

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

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["folder"] = os.fspath(self.folder)
        return out


def search(model: str | os.PathLike, data: str | os.PathLike, budget: str, *,
           folder: str | os.PathLike, objective: Objective = "latency", trials: int = 24,
           seed: int = 0, calibration: str | os.PathLike | None = None, batch: int = 8,
           output: str | os.PathLike | None = None, workers: int = 1,
           ray: str | bool | None = None, progress: bool | None = None) -> SearchResult:
    """Search pipelines over every family ``model`` offers for the cheapest one within
    ``budget`` on ``data``; ``folder`` keeps the trials (rerun to resume) and
    ``front.json``; ``output`` receives the chosen model.

    ``workers``: candidates built by that many local processes; ``ray``: by Ray tasks on
    the cluster at that address (True: a local instance of ``workers`` CPUs). Either way
    the candidates and their metrics are the same; latencies are timed here, one at a
    time. ``progress``: a bar with the best so far (None: when stderr is a terminal)."""
    if trials < 1:
        raise BadInputError(f"search: trials={trials}; give at least 1")
    if objective not in ("latency", "size"):
        raise BadInputError(f"search: objective {objective!r}; give latency or size")
    parsed = parse_budget(budget)
    runner = Search(model, data, parsed, folder, objective=objective, calibration=calibration,
                    seed=seed, batch=batch)
    with workers_for(workers, ray) as pool:
        candidates = runner.run(trials, pool, progress=progress)
    front = runner.front()
    chosen = front[0] if front else None
    if chosen is not None and output is not None:
        assert chosen.path is not None
        save(load(chosen.path), output)
    result = SearchResult(parsed.text, objective, runner.original, candidates, front, chosen,
                          Path(folder), list(runner.space.notes))
    (Path(folder) / "front.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    return result
