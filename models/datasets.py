"""Evaluation data by name or file: model inputs keyed by input name, plus what scores them.

A classifier's set carries ``label``; an encoder's carries ``reference`` (the reference
model's embeddings, one row per sample) and optionally ``pairs`` (``[P, 2]`` sample indices
whose similarities are compared). Those arrays are never fed to the model.

- ``digits``: the held-out split of scikit-learn's digits set shipped as
  ``digits_test.npz`` (written by ``train_digits``; no scikit-learn needed to read it);
- ``digits-validation``: 134 images of the training split held out of the digits models'
  training (``digits_validation.npz``): what choices such as ``onnxpress search`` are made
  on, so that the test split stays unseen;
- ``digits-shifted``: the test split under the nine one-pixel shifts of the training
  augmentation (4050 images), for telling apart models a few test images from each other;
- ``minilm-texts``: 300 hand-written sentences tokenized for all-MiniLM-L6-v2 with its fp32
  embeddings as ``reference`` (``minilm_texts.npz``, written by ``build_minilm_texts``);
- ``smollm2-text``: the evaluation text written for this project (``llm_texts/``) in 58
  windows of 128 SmolLM2 tokens, with ``targets`` (the next token at each position, -1
  where none): a causal language model's set, scored by perplexity
  (``smollm2_text.npz``, written by ``build_llm_texts``);
- ``FILE.npz``: arrays keyed by input name (first axis = samples) and ``label``, or
  ``reference`` (+ optional ``pairs``), or ``targets``.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from onnxpress.errors import BadInputError

HERE = Path(__file__).parent
NAMED = {"digits": HERE / "digits_test.npz",
         "digits-validation": HERE / "digits_validation.npz",
         "minilm-texts": HERE / "minilm_texts.npz",
         "smollm2-text": HERE / "smollm2_text.npz"}
#: sets computed from a named one: name -> (source name, per-input transform, label repeats)
DERIVED = {"digits-shifted": ("digits", "shifted", 9)}
LABEL_KEYS = ("label", "labels")
#: encoder and language-model metadata: scored against, never fed to the model
EXTRA_KEYS = ("pairs", "reference", "targets")


@dataclasses.dataclass
class Dataset:
    name: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def reference(self) -> np.ndarray | None:
        """The reference embeddings ``[N, D]``: present means "evaluate as an encoder"."""
        return self.extras.get("reference")

    @property
    def pairs(self) -> np.ndarray | None:
        return self.extras.get("pairs")

    @property
    def targets(self) -> np.ndarray | None:
        """The next token per position ``[N, S]`` (-1: none): "evaluate as a causal LM"."""
        return self.extras.get("targets")

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """The model inputs in consecutive slices of ``size`` samples (the last may be short)."""
        if size < 1:
            raise BadInputError("batch size must be at least 1")
        for start in range(0, len(self), size):
            yield {name: array[start : start + size] for name, array in self.inputs.items()}


def is_dataset(source: object) -> bool:
    """Whether ``source`` must go through :func:`load_dataset` rather than be read as raw
    input arrays: a named set, or an ``.npz`` whose encoder metadata must not be fed."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    if os.fspath(source) in NAMED or os.fspath(source) in DERIVED:
        return True
    path = Path(source)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return any(key in arrays.files for key in EXTRA_KEYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False  # let the caller's own reader report it


def load_dataset(source: str | Path) -> Dataset:
    if str(source) in DERIVED:
        return _derived(str(source))
    path = NAMED.get(str(source)) or Path(source)
    if not path.is_file():
        known = ", ".join(sorted([*NAMED, *DERIVED]))
        raise BadInputError(f"{source}: no such data set or .npz file (named sets: {known})")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise BadInputError(f"{path}: not a readable .npz file ({error})") from None
    label_key = next((k for k in LABEL_KEYS if k in data), None)
    labels = data.pop(label_key) if label_key else None
    extras = {key: data.pop(key) for key in EXTRA_KEYS if key in data}
    if not data:
        raise BadInputError(f"{path}: holds no input arrays")
    per_sample = [*data.values(), *([labels] if labels is not None else [])]
    per_sample += [extras["reference"]] if "reference" in extras else []
    counts = {a.shape[0] if a.ndim else -1 for a in per_sample}
    if len(counts) != 1 or -1 in counts:
        raise BadInputError(f"{path}: arrays disagree on the number of samples (axis 0)")
    if "pairs" in extras:
        _check_pairs(path, extras["pairs"], counts.pop())
    return Dataset(str(source), data, labels, extras)


def _check_pairs(path: Path, pairs: np.ndarray, samples: int) -> None:
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise BadInputError(f"{path}: 'pairs' must be integer sample indices of shape [P, 2]")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= samples):
        raise BadInputError(f"{path}: 'pairs' holds indices outside 0..{samples - 1}")


def _derived(name: str) -> Dataset:
    from onnxpress.models import digits_data

    origin, transform, repeats = DERIVED[name]
    base = load_dataset(origin)
    inputs = {key: getattr(digits_data, transform)(value) for key, value in base.inputs.items()}
    labels = None if base.labels is None else np.tile(base.labels, repeats)
    return Dataset(name, inputs, labels)
