"""``evaluate``: a model's metric on a data set (top-1 accuracy for classifiers)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tqdm import tqdm

from onnxpress.errors import BadInputError
from onnxpress.frontends.onnx_loader import ModelSource, load
from onnxpress.models.datasets import Dataset, load_dataset


@dataclasses.dataclass
class Evaluation:
    data: str
    samples: int
    metric: str
    value: float


def evaluate(
    model: ModelSource, data: str | os.PathLike | Dataset, *, batch_size: int = 64,
    progress: bool | None = None,
) -> Evaluation:
    """Run ``model`` (path, bytes, proto or IR) over ``data`` with ONNX Runtime.

    Classifiers (labels given, first output ``[N, classes]``): top-1 accuracy.
    """
    from onnxpress.backends.ort_runner import Runner

    dataset = data if isinstance(data, Dataset) else load_dataset(os.fspath(data))
    if dataset.labels is None:
        raise BadInputError(f"{dataset.name}: has no 'label' array, so there is no metric")
    source = os.fspath(model) if isinstance(model, (str, Path)) else model
    if isinstance(source, str):
        load(source)  # one-line errors for a corrupt file before ONNX Runtime sees it
    runner = Runner(source if isinstance(source, str) else load(source))
    missing = [name for name in runner.input_names if name not in dataset.inputs]
    if missing:
        raise BadInputError(f"{dataset.name}: no array for model input {missing[0]!r}")
    correct = 0
    hidden = None if progress is None else not progress
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate", disable=hidden,
                      leave=False):
        feed = {k: v[start : start + batch_size] for k, v in dataset.inputs.items()}
        logits = runner.run(feed)[runner.output_names[0]]
        if logits.ndim != 2:
            raise BadInputError(f"output {runner.output_names[0]!r} is not [N, classes]")
        correct += int((logits.argmax(1) == dataset.labels[start : start + batch_size]).sum())
    return Evaluation(dataset.name, len(dataset), "top1_accuracy", correct / len(dataset))
