"""A candidate judged against the budget: its metric on the data, beside the original's.

The metric is what :func:`onnxpress.evaluate` reports for the data set (top-1 accuracy for
labelled images, Spearman or retrieval agreement for an encoder's reference embeddings,
perplexity for next-token targets), except ``cosine``: the mean cosine of the candidate's
first output against the original model's, per sample, on the data set's inputs
(:func:`onnxpress.compare`), which needs no labels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from onnxpress.api import compare
from onnxpress.autotune.budget import Budget
from onnxpress.errors import BadInputError
from onnxpress.evaluation import evaluate
from onnxpress.frontends.onnx_loader import ModelSource
from onnxpress.models.datasets import Dataset, load_dataset

__all__ = ["Verdict", "judge", "metric_of"]

#: batches of the data set the cosine is measured on (a data set's own batching)
COSINE_BATCHES = 8


@dataclasses.dataclass(frozen=True)
class Verdict:
    value: float  # the candidate's metric
    original: float  # the original model's, on the same data
    holds: bool
    slack: float  # inside the budget by this much (negative: outside), metric units

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metric_of(budget: Budget, model: ModelSource, original: ModelSource,
              data: str | os.PathLike | Dataset) -> float:
    """The budget's metric of ``model`` on ``data`` (``original``: the cosine's reference)."""
    if budget.metric == "cosine":
        return float(compare(original, model, data, batches=COSINE_BATCHES)[0]["cosine"])
    dataset = data if isinstance(data, Dataset) else load_dataset(os.fspath(data))
    result = evaluate(model, dataset, progress=False)
    if budget.metric not in result.metrics:
        raise BadInputError(f"budget {budget.text!r}: data set {dataset.name!r} measures "
                            f"{', '.join(result.metrics)}, not {budget.metric}")
    return float(result.metrics[budget.metric])


def judge(budget: Budget, model: ModelSource, original: ModelSource,
          data: str | os.PathLike | Dataset, original_value: float | None = None) -> Verdict:
    """``model`` against ``budget`` on ``data``; ``original_value`` saves measuring the
    original again (a search measures it once)."""
    if original_value is None:
        original_value = metric_of(budget, original, original, data)
    value = metric_of(budget, model, original, data)
    return Verdict(value, original_value, budget.holds(value, original_value),
                   budget.slack(value, original_value))
