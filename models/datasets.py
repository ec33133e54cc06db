"""Evaluation data by name or file: inputs keyed by the model's input names, plus labels.

- ``digits``: the held-out split of scikit-learn's digits set shipped as
  ``digits_test.npz`` (written by ``train_digits``; no scikit-learn needed to read it);
- ``FILE.npz``: arrays keyed by input name (first axis = samples) and ``label``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from onnxpress.errors import BadInputError

HERE = Path(__file__).parent
NAMED = {"digits": HERE / "digits_test.npz"}
LABEL_KEYS = ("label", "labels")


@dataclasses.dataclass
class Dataset:
    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


def load_dataset(source: str | Path) -> Dataset:
    path = NAMED.get(str(source))
    if path is None and str(source) == "minilm-texts":
        raise BadInputError("the MiniLM text set is not in this version yet; use digits or a .npz")
    path = path or Path(source)
    if not path.is_file():
        known = ", ".join(sorted(NAMED))
        raise BadInputError(f"{source}: no such data set or .npz file (named sets: {known})")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise BadInputError(f"{path}: not a readable .npz file ({error})") from None
    label_key = next((k for k in LABEL_KEYS if k in data), None)
    labels = data.pop(label_key) if label_key else None
    if not data:
        raise BadInputError(f"{path}: holds labels but no input arrays")
    counts = {len(a) for a in data.values()} | ({len(labels)} if labels is not None else set())
    if len(counts) != 1:
        raise BadInputError(f"{path}: arrays disagree on the number of samples (axis 0)")
    return Dataset(str(source), data, labels)
