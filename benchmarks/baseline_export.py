"""The baseline suite's models: per model, a cache folder holding its fp32 file, calibration
inputs and the inputs its variants are compared on.

Zoo models are exported by this file run as a child process (``python baseline_export.py
NAME FOLDER``), so that torch never loads into the process that times ONNX Runtime. Their
inputs are the zoo's ``example_inputs(48)`` (seeded: standard-normal images, or token ids and
padding masks): the first 16 samples calibrate, the other 32 compare variants with fp32.
MiniLM, which has real weights, calibrates on real text instead: every 5th sentence of the
``minilm-texts`` set (60), padded to 32 tokens (random token ids are no calibration for a
real encoder: bias correction and the peers' ranges both need representative inputs).
The digits models are copied from the package; they calibrate on the first 64 images of
the digits *training* split (scikit-learn; else the first 64 test images, which the JSON
then says) and are compared on the first 32 test images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from baseline_variants import Calibration

from onnxpress.models.zoo import ZOO

HERE = Path(__file__).resolve().parent
PACKAGE_MODELS = HERE.parent / "models"
MINILM_TEXTS = PACKAGE_MODELS / "minilm_texts.json"
DIGITS = {name: PACKAGE_MODELS / f"{name}.onnx" for name in ("digits_cnn", "digits_vit")}
MODELS = (*ZOO, *DIGITS)
#: the named data set each model's own metric is measured on (``onnxpress.evaluate``)
EVAL_DATA = {"digits_cnn": "digits", "digits_vit": "digits", "minilm": "minilm-texts"}
CALIBRATION_SAMPLES = {"zoo": 16, "digits": 64}
COMPARE_SAMPLES = 32
BATCH = 8  # calibration batch, and the batch the memory probe runs


@dataclasses.dataclass
class Prepared:
    name: str
    fp32: Path
    calibration: Calibration
    compare_inputs: Path  # .npz keyed by input name, COMPARE_SAMPLES samples
    eval_data: str | None
    info: dict[str, Any]  # what model.json says: kind, sources of the inputs, export time


def prepare(name: str, folder: Path) -> Prepared:
    """The model's cache folder, filled on first use; raises RuntimeError if export fails."""
    meta = folder / "model.json"
    if not meta.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if name in DIGITS:
            _prepare_digits(name, folder)
        else:
            _export_in_child(name, folder)
    info = json.loads(meta.read_text())
    with np.load(folder / "compare.npz") as arrays:
        info["compare_shapes"] = {key: list(arrays[key].shape) for key in arrays.files}
    with np.load(folder / "calibration.npz") as arrays:
        data = {key: arrays[key] for key in arrays.files}
    count = len(next(iter(data.values())))
    batches = [{k: v[i : i + BATCH] for k, v in data.items()} for i in range(0, count, BATCH)]
    return Prepared(name, folder / "fp32.onnx", Calibration(batches, info["calibration"]),
                    folder / "compare.npz", EVAL_DATA.get(name), info)


def _export_in_child(name: str, folder: Path) -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, name, str(folder)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (folder / "model.json").is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"export failed: {lines[-1] if lines else f'exit {proc.returncode}'}")


def _prepare_digits(name: str, folder: Path) -> None:
    from onnxpress.models.datasets import load_dataset

    test = load_dataset("digits").inputs["image"]
    count = CALIBRATION_SAMPLES["digits"]
    try:
        from onnxpress.models.digits_data import load_split

        calibration = load_split()[0][:count]
        source = f"digits training split (load_split), first {count} images"
    except ImportError:
        calibration = test[:count]
        source = f"digits TEST split, first {count} images (no scikit-learn for the train split)"
    shutil.copyfile(DIGITS[name], folder / "fp32.onnx")
    _write(folder, {"image": calibration}, {"image": test[:COMPARE_SAMPLES]}, {
        "kind": "image", "calibration": source,
        "compare_inputs": f"digits test split, first {COMPARE_SAMPLES} images",
    })


def _write(folder: Path, calibration: dict[str, np.ndarray], compare: dict[str, np.ndarray],
           info: dict[str, Any]) -> None:
    np.savez(folder / "calibration.npz", **calibration)
    np.savez(folder / "compare.npz", **compare)
    (folder / "model.json").write_text(json.dumps(info, indent=1))  # last: marks it complete


def export_zoo_model(name: str, folder: Path) -> None:
    """Child process: export ``name`` to ``folder/fp32.onnx`` and write its inputs."""
    entry = ZOO[name]
    start = time.perf_counter()
    tmp = entry.export(folder / "fp32.tmp.onnx")
    tmp.replace(folder / "fp32.onnx")
    seconds = time.perf_counter() - start
    calibrate = CALIBRATION_SAMPLES["zoo"]
    tensors = entry.example_inputs(calibrate + COMPARE_SAMPLES)
    arrays = {n: t.numpy() for n, t in zip(entry.input_names, tensors)}
    what = "standard-normal images" if entry.kind == "image" else "token ids + padding masks"
    calibration = {k: v[:calibrate] for k, v in arrays.items()}
    source = f"zoo example_inputs (seeded {what}), samples 0-{calibrate - 1}"
    if name == "minilm":
        from onnxpress.models.minilm import tokenize

        texts = [s["text"] for s in json.loads(MINILM_TEXTS.read_text())["sentences"]][::5]
        calibration = tokenize(texts, pad_to=32)
        source = f"minilm-texts sentences 0, 5, 10, ... ({len(texts)}), padded to 32 tokens"
    _write(folder, calibration,
           {k: v[calibrate:] for k, v in arrays.items()}, {
               "kind": entry.kind, "export_s": seconds,
               "calibration": source,
               "compare_inputs": f"zoo example_inputs, samples {calibrate}-"
                                 f"{calibrate + COMPARE_SAMPLES - 1}",
           })


if __name__ == "__main__":
    export_zoo_model(sys.argv[1], Path(sys.argv[2]))
