"""What the baseline suite measures per variant: latency and throughput (interleaved, via
``onnxpress.backends.bench``), peak memory and outputs (a fresh child process), and quality
(the model's own metric, or agreement with fp32)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxpress.backends.bench import bench_models

HERE = Path(__file__).resolve().parent
PROBE = HERE / "baseline_probe.py"


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long timing may take: rounds of interleaved runs, up to ``max_repeats`` (or exactly
    ``fixed`` rounds), stopping once ``budget_s`` has passed (but not before ``min_repeats``)."""

    budget_s: float
    min_repeats: int
    max_repeats: int
    warmup: int
    fixed: int | None = None


def time_variants(paths: dict[str, Path], inputs: Path, *, batch: int, threads: int,
                  timing: Timing) -> dict[str, dict[str, float]]:
    """Variant -> median/p10/p90 ms, samples/s and rounds, all variants interleaved, on the
    first ``batch`` samples of ``inputs`` (.npz; the model's real inputs, where random ones
    would give a dynamic sequence axis length 1)."""
    with np.load(inputs) as arrays:
        feeds = {key: arrays[key] for key in arrays.files}
    rows = bench_models(
        [(label, os.fspath(path)) for label, path in paths.items()], threads=threads,
        batch=batch, warmup=timing.warmup, repeats=timing.fixed or timing.max_repeats,
        progress=False, budget_s=None if timing.fixed else timing.budget_s,
        min_repeats=timing.min_repeats, feeds=feeds,
    )
    return {
        row.model: {"median_ms": row.median_ms, "p10_ms": row.p10_ms, "p90_ms": row.p90_ms,
                    "samples_per_s": row.throughput, "repeats": row.repeats}
        for row in rows
    }


def probe(path: Path, inputs: Path, threads: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Peak RSS (MB), session load time and outputs of ``path`` on ``inputs``, from a fresh
    process; raises RuntimeError with the child's last error line."""
    with tempfile.TemporaryDirectory(prefix="baseline-probe-") as tmp:
        outputs, result = Path(tmp) / "outputs.npz", Path(tmp) / "result.json"
        command = [sys.executable, os.fspath(PROBE), os.fspath(path), os.fspath(inputs),
                   os.fspath(outputs), os.fspath(result), str(threads)]
        proc = subprocess.run(command, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if proc.returncode != 0 or not result.is_file():
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"probe exited {proc.returncode}")
        with np.load(outputs) as arrays:
            values = {key: arrays[key] for key in arrays.files}
        return json.loads(result.read_text()), values


def agreement(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], *,
              classifier: bool) -> dict[str, Any]:
    """Against fp32, on the first output: mean per-sample cosine, max |diff|, and for
    classifiers top-1 agreement (argmax over the last axis; None for encoders, whose argmax
    over embedding dimensions means nothing)."""
    name = next(iter(reference))
    ref, out = reference[name].astype(np.float64), got[name].astype(np.float64)
    if ref.shape != out.shape:
        raise RuntimeError(f"output {name!r} has shape {out.shape}, fp32 {ref.shape}")
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), 1.0)
    top1 = float((ref.argmax(-1) == out.argmax(-1)).mean()) if classifier else None
    return {"output": name, "samples": len(ref), "top1_agreement": top1,
            "cosine": float(cosine.mean()), "max_abs": float(np.abs(ref - out).max())}


def dataset_metric(path: Path, data: str) -> dict[str, Any]:
    """``onnxpress.evaluate`` on the model's named data set: metric, value, samples."""
    import onnxpress

    result = onnxpress.evaluate(path, data, progress=False)
    return dataclasses.asdict(result)
