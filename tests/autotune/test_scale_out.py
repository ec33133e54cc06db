"""A search's candidates do not depend on who builds them: this process, two local worker
processes or a local two-CPU Ray instance (real Ray, no mock) give the same pipelines and
metrics; and a search killed mid-run resumes without building a finished trial again, ending
where an uninterrupted one ends."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import onnxpress
from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.trials import Candidate, Search
from onnxpress.autotune.workers import InProcess, Processes, RayTasks
from onnxpress.models.digits_data import CALIBRATION_NPZ

CNN = Path(onnxpress.models.__file__).parent / "digits_cnn.onnx"
BUDGET = parse_budget("top1>=-1pt")


def _search(folder: Path) -> Search:
    # size: the cost is the file's bytes, so every field can be compared exactly
    return Search(CNN, "digits", BUDGET, folder, objective="size",
                  calibration=CALIBRATION_NPZ, seed=5)


def _record(candidates: list[Candidate]) -> list[tuple]:
    return [(c.pipeline, c.value, c.holds, c.cost, c.rejected) for c in candidates]


def test_local_processes_and_ray_build_the_same_candidates(tmp_path: Path,
                                                           monkeypatch) -> None:
    alone = _search(tmp_path / "alone").run(8, InProcess())
    assert len({c.pipeline for c in alone}) > 2
    with Processes(2) as pool:
        local = _search(tmp_path / "processes").run(8, pool)
    import ray
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value: puts.append(value) or real_put(value))
    with RayTasks(None, cpus=2) as cluster:
        assert ray.cluster_resources()["CPU"] == 2
        search = _search(tmp_path / "ray")
        remote = search.run(8, cluster)
    assert not ray.is_initialized()  # the instance the search started is stopped
    assert _record(local) == _record(alone)
    assert _record(remote) == _record(alone)
    # the model and the calibration file went to the object store once, for both rounds
    assert len(puts) == 1 and puts[0].model.data == CNN.read_bytes()
    for c in remote:  # the bytes a task sent back are the candidate the driver kept
        if c.path is not None:
            twin = next(a for a in alone if a.pipeline == c.pipeline)
            assert Path(c.path).read_bytes() == Path(twin.path).read_bytes()


def _finished(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            return connection.execute(
                "select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet, or locked
        return 0


def _cli(folder: Path) -> list[str]:
    return [sys.executable, "-m", "onnxpress", "search", str(CNN), "--data", "digits",
            "--budget", "top1>=-1pt", "--objective", "size", "--trials", "12",
            "--seed", "5", "--calibration", str(CALIBRATION_NPZ), "--report", str(folder)]


def test_a_killed_search_resumes_without_building_a_finished_trial_again(
        tmp_path: Path) -> None:
    folder = tmp_path / "killed"
    process = subprocess.Popen(_cli(folder), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _finished(folder / "trials.db") < 4 and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.kill()
    process.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "candidates").iterdir()}
    first = _search(folder).candidates()
    if len(first) == 12:
        pytest.fail("the search finished before it could be killed")
    assert len(first) >= 4
    done = subprocess.run(_cli(folder), capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr
    resumed = _search(folder).candidates()
    assert len(resumed) == 12 and resumed[:len(first)] == first
    for c in first:  # not built again
        if c.path is not None:
            assert Path(c.path).stat().st_mtime_ns == before[Path(c.path).name]
    whole = _search(tmp_path / "whole").run(12)
    assert _record(resumed) == _record(whole)
    assert "12 trials" in done.stdout
