"""The baseline benchmark suite's machinery, end to end on the digits CNN with tiny repeat
counts: every variant is built, measured and written to the JSON, and a rerun uses the cache.
No wall-clock asserts: only that the numbers exist and the quantized models are what they
should be (smaller, still accurate)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
VARIANTS = {"fp32", "ort-opt", "dynamic", "qdq-u8s8", "qdq-s8s8"}
QUANTIZED = ("dynamic", "qdq-u8s8", "qdq-s8s8")


def _suite(results: Path, *extra: str) -> dict:
    command = [sys.executable, str(RUN), "--suite", "baseline", "--models", "digits_cnn",
               "--repeats", "3", "--results", str(results), *extra]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((results / "baseline.json").read_text())
    table = [line.split() for line in proc.stdout.splitlines() if line.startswith("digits_cnn")]
    assert [words[1] for words in table] == [row["variant"] for row in data["rows"]]
    return data


def test_baseline_suite_on_digits_cnn(tmp_path: Path) -> None:
    data = _suite(tmp_path)
    rows = {row["variant"]: row for row in data["rows"]}
    assert set(rows) == VARIANTS == set(data["config"]["variants"])
    for variant, row in rows.items():
        assert row["status"] == "ok", (variant, row["error"])
        assert row["latency_b1"]["median_ms"] > 0 and row["latency_b1"]["p10_ms"] > 0
        assert row["latency_b1"]["repeats"] == 3 and row["throughput_b8"]["repeats"] == 3
        assert row["throughput_b8"]["samples_per_s"] > 0
        assert row["size_mb"] > 0 and row["peak_mb"] > 0
        assert row["metric"]["metric"] == "top1_accuracy"
        assert row["vs_fp32"]["samples"] == 32
    assert rows["fp32"]["metric"]["value"] >= 0.95
    for variant in QUANTIZED:
        assert rows[variant]["size_mb"] < rows["fp32"]["size_mb"], variant
        assert rows[variant]["ratios"]["size"] < 1
        assert rows[variant]["metric"]["value"] >= 0.9, variant
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "baseline.png").is_file() == has_matplotlib
    assert (tmp_path / "baseline" / "digits_cnn" / "qdq-s8s8.onnx").is_file()

    again = _suite(tmp_path, "--variants", "dynamic", "--no-plot")
    rows = {row["variant"]: row for row in again["rows"]}
    assert set(rows) == {"fp32", "dynamic"}  # fp32 is always there: the reference
    assert all(row["cached"] for row in rows.values())
