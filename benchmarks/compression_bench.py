"""What the one-shot compression benchmarks (``prune.py``, ``lowrank.py``) share: building
a variant, timing variants side by side, scoring a digits model, and the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import onnxpress
from onnxpress.backends.bench import bench_models
from onnxpress.backends.ort_runner import Runner

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
Rows = list[dict[str, Any]]


def build(source: Any, spec: str, path: Path, calibration: Any = None,
          stats_of: str | None = None) -> dict[str, Any]:
    """Compile ``cleanup[,spec]`` to ``path``: the stats, time and notes of the last pass,
    or of the last one named ``stats_of``."""
    passes = "cleanup" + (f",{spec}" if spec else "")
    model, report = onnxpress.compile(source, passes, calibration=calibration,
                                      return_report=True)
    onnxpress.save(model, path)
    named = [r for r in report.passes if r.name == stats_of]
    record = named[-1] if named else report.passes[-1]
    return {"spec": spec or "cleanup", "path": str(path), "parameters": record.parameters_after,
            "bytes": path.stat().st_size, "stats": record.stats if spec else {},
            "seconds": record.seconds if spec else 0.0, "notes": record.notes if spec else []}


def timed(name: str, rows: Rows, feeds: dict[str, np.ndarray], rounds: int,
          b8_rounds: int | None = None) -> Rows:
    """Time ``rows`` (the first is the baseline) interleaved at batch 1 (``rounds``) and 8
    (``b8_rounds``, default half as many); add medians, speed-ups and the first output's
    cosine against the baseline on 8 inputs."""
    for r in rows:
        for note in r["notes"][:3]:
            print(f"  {name} {r['spec']}: {note}")
    labelled = [(r["spec"], r["path"]) for r in rows]
    benches = {(b, n): bench_models(labelled, batch=b, repeats=n, feeds=feeds, progress=False)
               for b, n in ((1, rounds), (8, b8_rounds or max(rounds // 2, 5)))}
    sample = [{k: v[:8] for k, v in feeds.items()}]
    for i, r in enumerate(rows):
        r["model"] = name
        for (b, n), bench in benches.items():
            r[f"b{b}_ms"], r[f"b{b}_speedup"] = (bench[i].median_ms,
                                                 bench[0].median_ms / bench[i].median_ms)
            r[f"b{b}_p10_p90_ms"], r[f"b{b}_rounds"] = [bench[i].p10_ms, bench[i].p90_ms], n
        r["cosine"] = onnxpress.compare(rows[0]["path"], r["path"], sample, batches=1)[0]["cosine"]
        print(f"  {name} {r['spec']}: b1 {r['b1_ms']:.2f} ms ({r['b1_speedup']:.2f}x)", flush=True)
    return rows


def timing_cells(r: dict[str, Any]) -> str:
    """A timed row's table cells: file MB | b1 ms | b1 speed-up | b8 ms | b8 speed-up |
    cosine against the baseline."""
    return (f"{r['bytes'] / 1e6:.1f} | {r['b1_ms']:.2f} | {r['b1_speedup']:.2f}x | "
            f"{r['b8_ms']:.1f} | {r['b8_speedup']:.2f}x | {r['cosine']:.4f}")


def scored(name: str, rows: Rows) -> Rows:
    """Each row's metrics: ``minilm-texts`` for MiniLM; for a digits model top-1 on the
    test split and on ``digits-shifted``, and the logits' relative L2 error against the
    first row's on the test split."""
    images = np.load(MODELS / "digits_test.npz")["image"]
    reference = None
    for r in rows:
        r["model"] = name
        evaluation = onnxpress.evaluate(r["path"], "minilm-texts" if name == "minilm"
                                        else "digits")
        r["metrics"] = dict(evaluation.metrics, value=evaluation.value)
        if name != "minilm":
            r["metrics"]["shifted"] = onnxpress.evaluate(r["path"], "digits-shifted").value
            logits = next(iter(Runner(r["path"]).run({"image": images}).values()))
            reference = logits if reference is None else reference
            r["metrics"]["logits_rel_l2"] = float(np.linalg.norm(logits - reference)
                                                  / np.linalg.norm(reference))
        print(f"  {name} {r['spec']}: {r['metrics']} ({r['seconds']:.1f} s)", flush=True)
    return rows


def minilm_texts() -> list[str]:
    """The MiniLM text set's 300 sentences."""
    return [s["text"] for s in json.loads((MODELS / "minilm_texts.json").read_text())
            ["sentences"]]


def subject(name: str, folder: Path | None = None) -> tuple[Path, Any]:
    """(model file, calibration batches): digits ``digits_calibration.npz``, MiniLM the
    sentences of ``minilm_calibration.json``, each its own batch. ``folder``: made for
    the variants' files."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    if name == "minilm":
        from onnxpress.models.minilm import calibration_batches, minilm_onnx

        return minilm_onnx(), calibration_batches()
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    return MODELS / f"{name}.onnx", onnxpress.CalibrationData(CALIBRATION_NPZ)


def main(argv: list[str] | None, doc: str, name: str, speed: Callable[..., Rows],
         accuracy: Callable[..., Rows], tables: Callable[[Rows, Rows], str],
         speed_models: str, accuracy_models: str, rounds: int = 40,
         after: Callable[[Rows, Path], str] | None = None) -> int:
    """The shared command line: ``--rounds``, ``--speed-models``, ``--accuracy-models``,
    ``--cache-dir`` (results/NAME), ``--out`` (results/NAME.json); ``after(accuracy rows,
    the out path with .png)`` runs last (a plot) and says what it did."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds, help="timed rounds at batch 1")
    parser.add_argument("--speed-models", default=speed_models)
    parser.add_argument("--accuracy-models", default=accuracy_models)
    parser.add_argument("--cache-dir", type=Path, default=HERE / "results" / name)
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"{name}.json")
    args = parser.parse_args(argv)
    fast = [r for n in filter(None, args.speed_models.split(","))
            for r in speed(n, args.cache_dir, args.rounds)]
    good = [r for n in filter(None, args.accuracy_models.split(","))
            for r in accuracy(n, args.cache_dir)]
    print(f"\n{tables(fast, good)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds_b1": args.rounds, "speed": fast, "accuracy": good},
                                   indent=2, default=str))
    if after is not None and good:
        print(after(good, args.out.with_suffix(".png")))
    return 0
