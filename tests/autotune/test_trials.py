"""A search's trials on the digits CNN (small, fast): compiled, judged and stored, resumed
without repeating a finished trial, the same on the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxpress
from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.judge import metric_of
from onnxpress.autotune.trials import Search
from onnxpress.models.digits_data import CALIBRATION_NPZ

CNN = Path(onnxpress.models.__file__).parent / "digits_cnn.onnx"
BUDGET = parse_budget("top1>=-1pt")


def _search(folder: Path) -> Search:
    return Search(CNN, "digits", BUDGET, folder, objective="size",
                  calibration=CALIBRATION_NPZ, seed=3)


def test_trials_are_judged_stored_and_resumed(tmp_path: Path, monkeypatch) -> None:
    search = _search(tmp_path / "s")
    first = search.run(4)
    assert len(first) == 4
    for candidate in first:
        if candidate.rejected is None:
            assert Path(candidate.path).is_file()
            # the stored metric is the file's own, measured again independently
            assert metric_of(BUDGET, candidate.path, CNN, "digits") == pytest.approx(
                candidate.value)
            assert candidate.holds == (candidate.value >= search.original - 0.01)
    # a new Search on the same folder resumes: nothing finished is compiled again
    compiled = []
    import onnxpress.autotune.candidate as candidate
    real = candidate.compile
    monkeypatch.setattr(candidate, "compile",
                        lambda *a, **k: compiled.append(a[1]) or real(*a, **k))
    again = _search(tmp_path / "s")
    assert again.run(4) == first and compiled == []
    more = again.run(6)
    assert more[:4] == first and len(more) == 6
    assert len(compiled) <= 2  # a repeated pipeline is answered from the store
    assert len(compiled) == len({c.pipeline for c in more[4:]} - {c.pipeline for c in first})


def test_the_front_holds_the_budget_and_nothing_in_it_is_dominated(tmp_path: Path) -> None:
    search = _search(tmp_path / "s")
    search.run(8)
    front = search.front()
    assert front, [c.rejected or c.value for c in search.candidates()]
    assert len({c.pipeline for c in front}) == len(front)
    for c in front:
        assert c.holds
        assert c.number == min(o.number for o in search.candidates() if o.pipeline == c.pipeline)
        assert not any(o.holds and o.cost < c.cost and o.slack > c.slack
                       for o in search.candidates())


def test_a_candidates_warnings_go_to_its_trial_not_the_console(tmp_path: Path,
                                                              caplog) -> None:
    search = _search(tmp_path / "s")
    search.run(4)
    int8 = [t for t in search.study.trials if t.user_attrs.get("pipeline", "").endswith("int8")]
    assert int8, [t.user_attrs.get("pipeline") for t in search.study.trials]
    # int8 on the digits CNN: the cost rule keeps its few small layers float, and says so
    assert any("nothing quantized" in said for t in int8 for said in t.user_attrs["said"])
    assert not any("nothing quantized" in r.getMessage() for r in caplog.records)


def test_the_same_seed_gives_the_same_candidates(tmp_path: Path) -> None:
    a, b = (_search(tmp_path / name).run(3) for name in ("a", "b"))
    assert [(c.pipeline, c.value, c.cost) for c in a] == [(c.pipeline, c.value, c.cost)
                                                          for c in b]


def test_the_fastest_candidates_race_once_side_by_side(tmp_path: Path, monkeypatch) -> None:
    """Latency: the candidates within the budget near the cheapest are timed again together,
    their race's costs are the ones reported, and a finished search does not race again."""
    import onnxpress.autotune.trials as trials

    timed: list[int] = []
    real = trials.bench
    monkeypatch.setattr(trials, "bench", lambda models, **k: timed.append(len(models))
                        or real(models, **k))
    search = Search(CNN, "digits", BUDGET, tmp_path / "s", objective="latency",
                    calibration=CALIBRATION_NPZ, seed=3)
    candidates = search.run(8)
    race = search.study.user_attrs["race"]
    raced = {c.number: c for c in candidates if c.number in race["trials"]}
    assert len(raced) >= 2 and timed[-1] == len(raced) + 1  # one run: the original and all
    held = [c for c in search._measured_candidates() if c.holds]
    cheapest = min(c.cost for c in held)
    for number, candidate in raced.items():
        assert candidate.holds
        assert candidate.cost == race["costs"][str(number)]
        measured = next(c for c in held if c.number == number)
        assert measured.cost <= cheapest * trials.RACE_SPREAD
    # the front and the choice read the race's costs
    assert search.front()[0].cost == min(c.cost for c in candidates if c.holds)
    timed.clear()
    again = Search(CNN, "digits", BUDGET, tmp_path / "s", objective="latency",
                   calibration=CALIBRATION_NPZ, seed=3)
    assert again.run(8) == candidates and timed == []


def test_a_candidate_left_out_of_the_race_does_not_beat_it(tmp_path: Path,
                                                           monkeypatch) -> None:
    """A race run in a slower phase of the machine than the trials (here: every raced
    model 1.5x slower) must not let a candidate it left out win on its trial's cost."""
    import onnxpress.autotune.trials as trials

    real = trials.bench

    def slow_race(models, **k):
        rows = real(models, **k)
        if len(models) > 2:  # the race: the original and several candidates
            for row in rows[1:]:
                row["median_ms"] *= 1.5
        return rows

    monkeypatch.setattr(trials, "bench", slow_race)
    monkeypatch.setattr(trials, "RACE_SIZE", 2)
    search = Search(CNN, "digits", BUDGET, tmp_path / "s", objective="latency",
                    calibration=CALIBRATION_NPZ, seed=3)
    candidates = search.run(8)
    race = search.study.user_attrs["race"]
    held = [c for c in candidates if c.holds]
    assert len({c.pipeline for c in held}) > len(race["trials"])  # some were left out
    slowest = max(race["costs"].values())
    for candidate in held:
        if candidate.number not in race["trials"]:
            assert candidate.cost >= slowest
    assert search.front()[0].number in race["trials"]
