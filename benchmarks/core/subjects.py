"""The models the suites measure, by name: a file, calibration batches, and the inputs its
variants are compared and timed on.

- ``digits_cnn`` / ``digits_vit``: the trained files shipped in ``models/`` (read in place);
  calibrated on the first 64 images of ``digits_calibration.npz`` (drawn from the training
  split, disjoint from the test split), compared on the first 32 test images; their own
  metric is top-1 on ``digits``.
- the zoo (``onnxpress.models.zoo``, seeded random weights): exported once (dynamo) in a
  child process, so that torch never loads where ONNX Runtime is timed, and cached with the
  zoo's ``example_inputs(48)``: samples 0-15 calibrate, 16-47 compare.
- ``minilm`` (real all-MiniLM-L6-v2): ``minilm_onnx()``'s export (its own cache, made in a
  child); calibrated on every 5th sentence of ``minilm-texts`` (60) padded to 32 tokens
  (random token ids are no calibration for a real encoder), compared on sentences 200-231
  padded to 128 tokens; its own metric is ``minilm-texts``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Cache, version_tag
from .child import run_child

Batch = dict[str, np.ndarray]
PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models"
DIGITS = ("digits_cnn", "digits_vit")
CALIBRATION_SAMPLES = {"zoo": 16, "digits": 64}
COMPARE_SAMPLES = 32
BATCH = 8  # calibration batch, and the batch the memory probe runs


@dataclasses.dataclass(frozen=True)
class Subject:
    name: str
    fp32: Path
    kind: str  # image | text
    calibration: list[Batch]  # batches of BATCH samples, the same for every quantizer
    compare: Batch  # COMPARE_SAMPLES samples: agreement with fp32, and timing inputs
    eval_data: str | None  # the named data set of the model's own metric
    info: dict[str, Any]  # where the inputs come from, export time


def subject(name: str, cache: Cache) -> Subject:
    if name in DIGITS:
        return _digits(name)
    if name == "minilm":
        return _minilm()
    entry = cache.file((name, "fp32-dynamo", version_tag("torch")), lambda path: run_child(
        export_zoo, name=name, target=str(path))["value"])
    with np.load(inputs_of(entry.path)) as arrays:
        samples = {k: arrays[k] for k in arrays.files}
    calibrate = CALIBRATION_SAMPLES["zoo"]
    info = dict(entry.meta, cached=entry.cached)
    return Subject(name, entry.path, info["kind"],
                   batched({k: v[:calibrate] for k, v in samples.items()}),
                   {k: v[calibrate:] for k, v in samples.items()}, None, info)


def batched(arrays: Batch, size: int = BATCH) -> list[Batch]:
    count = len(next(iter(arrays.values())))
    return [{k: v[i : i + size] for k, v in arrays.items()} for i in range(0, count, size)]


def inputs_of(model: Path) -> Path:
    return model.with_name(f"{model.stem}.inputs.npz")


def minilm_texts() -> list[str]:
    """The ``minilm-texts`` set's 300 sentences."""
    data = json.loads((PACKAGE_MODELS / "minilm_texts.json").read_text())
    return [s["text"] for s in data["sentences"]]


def first_inputs(subject: Subject, seq: int, count: int = 8) -> Batch:
    """``count`` inputs to time on: the first comparison inputs; MiniLM's first
    ``minilm-texts`` sentences padded to ``seq`` tokens."""
    if subject.name != "minilm":
        return {k: v[:count] for k, v in subject.compare.items()}
    from onnxpress.models.minilm import tokenize

    return tokenize(minilm_texts()[:count], pad_to=seq)


def _digits(name: str) -> Subject:
    from onnxpress.models.datasets import load_dataset
    from onnxpress.models.digits_data import CALIBRATION_NPZ

    count = CALIBRATION_SAMPLES["digits"]
    with np.load(CALIBRATION_NPZ) as arrays:
        calibration = arrays["image"][:count]
    test = load_dataset("digits").inputs["image"]
    return Subject(name, PACKAGE_MODELS / f"{name}.onnx", "image",
                   batched({"image": calibration}), {"image": test[:COMPARE_SAMPLES]}, "digits",
                   {"calibration": f"digits_calibration.npz, first {count} images",
                    "compare_inputs": f"digits test split, first {COMPARE_SAMPLES} images"})


def _minilm() -> Subject:
    from onnxpress.models.minilm import tokenize

    path = Path(run_child(minilm_path)["value"])
    texts = minilm_texts()
    return Subject("minilm", path, "text", batched(tokenize(texts[::5], pad_to=32)),
                   tokenize(texts[200 : 200 + COMPARE_SAMPLES], pad_to=128), "minilm-texts",
                   {"calibration": "minilm-texts sentences 0, 5, 10, ... (60), padded to 32",
                    "compare_inputs": "minilm-texts sentences 200-231, padded to 128"})


# --- run in a child process (see run_child): these import torch -------------------------

def export_zoo(name: str, target: str) -> dict[str, Any]:
    """Export zoo model ``name`` to ``target`` and its example inputs beside it."""
    from onnxpress.models.zoo import ZOO

    entry, path = ZOO[name], Path(target)
    started = time.perf_counter()
    entry.export(path)
    tensors = entry.example_inputs(CALIBRATION_SAMPLES["zoo"] + COMPARE_SAMPLES)
    np.savez(inputs_of(path), **{n: t.numpy() for n, t in zip(entry.input_names, tensors)})
    what = "standard-normal images" if entry.kind == "image" else "token ids + padding masks"
    return {"kind": entry.kind, "export_s": time.perf_counter() - started,
            "calibration": f"zoo example_inputs (seeded {what}), samples 0-15",
            "compare_inputs": "zoo example_inputs, samples 16-47"}


def minilm_path() -> str:
    from onnxpress.models.minilm import minilm_onnx

    return str(minilm_onnx())
