"""How close a variant stays to its fp32 model: agreement of outputs on the same inputs, and
the model's own metric (``onnxpress.evaluate`` on its named data set)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import onnxpress
from onnxpress.backends.ort_runner import Runner

Outputs = Mapping[str, np.ndarray]


def outputs(path: Path | str, feeds: Mapping[str, np.ndarray], threads: int = 2) -> dict:
    """Every output of ``path`` on ``feeds`` (ONNX Runtime CPU, default level)."""
    return Runner(path, threads=threads).run(feeds)


def agreement(reference: Outputs, got: Outputs, *, classifier: bool) -> dict[str, Any]:
    """On the first output: mean per-sample cosine, max |diff|, and for classifiers top-1
    agreement (argmax over the last axis; None for encoders, whose argmax over embedding
    dimensions means nothing)."""
    name = next(iter(reference))
    ref = np.asarray(reference[name], np.float64)
    out = np.asarray(got.get(name, next(iter(got.values()))), np.float64)
    if ref.shape != out.shape:
        raise RuntimeError(f"output {name!r} has shape {out.shape}, fp32 {ref.shape}")
    top1 = float((ref.argmax(-1) == out.argmax(-1)).mean()) if classifier else None
    return {"output": name, "samples": len(ref), "top1_agreement": top1,
            "cosine": float(cosines(ref, out).mean()), "max_abs": float(np.abs(ref - out).max())}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine of two batches (1 where both are zero)."""
    x, y = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return np.where(norms > 0, (x * y).sum(1) / np.where(norms > 0, norms, 1.0), 1.0)


def max_rel_diff(reference: Outputs, got: Outputs) -> float:
    """The largest |diff| over all outputs, each relative to its output's largest |value|."""
    return max(float(np.max(np.abs(reference[k].astype(np.float64) - got[k]))
                     / max(float(np.max(np.abs(reference[k]))), 1e-30)) for k in reference)


def dataset_metric(path: Path | str, data: str) -> dict[str, Any]:
    """``onnxpress.evaluate`` on a named data set: metric, value, samples, all metrics."""
    return dataclasses.asdict(onnxpress.evaluate(path, data, progress=False))


def scored(path: Path | str, model: str, reference: np.ndarray | None = None, *,
           shifted: bool = True) -> tuple[dict[str, Any], np.ndarray | None]:
    """The metrics the compression suites report. MiniLM: ``minilm-texts`` (spearman,
    mean cosine, retrieval agreement against fp32 embeddings). Digits: top-1 on the test
    split (``value``) and on ``digits-shifted`` (the test images under the nine 1-pixel
    training shifts: 4050 images, so one image is 0.025 points), and the logits' relative
    L2 error on the test split against ``reference`` logits (0 without one). Also returns
    this model's test logits (None for MiniLM), to serve as the next one's reference.
    ``shifted=False`` leaves ``digits-shifted`` out (None): ten times the images, which a
    smoke run need not spend."""
    evaluation = onnxpress.evaluate(path, "minilm-texts" if model == "minilm" else "digits",
                                    progress=False)
    metrics: dict[str, Any] = dict(evaluation.metrics, value=evaluation.value)
    if model != "minilm":
        from onnxpress.models.digits_data import TEST_NPZ

        metrics["shifted"] = (onnxpress.evaluate(path, "digits-shifted", progress=False).value
                              if shifted else None)
        with np.load(TEST_NPZ) as arrays:
            logits = next(iter(outputs(path, {"image": arrays["image"]}).values()))
        base = logits if reference is None else reference
        metrics["logits_rel_l2"] = float(np.linalg.norm(logits - base) / np.linalg.norm(base))
        return metrics, logits
    return metrics, None
