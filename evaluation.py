"""``evaluate``: a model's metric on a data set.

Classifiers (the data set has labels): top-1 accuracy. Encoders (the data set has
``reference`` embeddings): how closely the model's embeddings keep the reference's
neighbours and similarity order, see :mod:`onnxpress.embedding_metrics`; the main metric is
``retrieval_agreement`` (does a search over the set return the same top hit?), since that is
the question a compressed encoder must answer, and it reads like top-1 accuracy. Causal
language models (the data set has ``targets``, the next token per position): perplexity,
exp of the mean negative log-likelihood of the targets under the first output's logits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from onnxpress.backends.ort_runner import Runner
from onnxpress.embedding_metrics import encoder_metrics, mean_pool
from onnxpress.errors import BadInputError
from onnxpress.frontends.onnx_loader import ModelSource, load
from onnxpress.models.datasets import Dataset, load_dataset

ENCODER_METRIC = "retrieval_agreement"
#: windows per batch for a language model: its logits are [B, S, vocab] (49152 for SmolLM2)
LM_BATCH = 4


@dataclasses.dataclass
class Evaluation:
    data: str
    samples: int
    metric: str  # the main metric, the one a CLI user or a budget looks at
    value: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # all, main included


def evaluate(
    model: ModelSource, data: str | os.PathLike | Dataset, *, batch_size: int = 64,
    progress: bool | None = None,
) -> Evaluation:
    """Run ``model`` (path, bytes, proto or IR) over ``data`` with ONNX Runtime.

    Classifiers (labels given, first output ``[N, classes]``): top-1 accuracy. Encoders
    (``reference`` given, first output ``[N, D]`` or token states ``[N, S, D]``, mean-pooled
    over ``attention_mask``): ``retrieval_agreement`` (main), ``spearman``, ``mean_cosine``.
    """
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, not {batch_size}")
    dataset = data if isinstance(data, Dataset) else load_dataset(os.fspath(data))
    if dataset.labels is None and dataset.reference is None and dataset.targets is None:
        raise BadInputError(f"{dataset.name}: has no 'label' array (nor 'reference' embeddings "
                            "or 'targets'), so there is no metric")
    if dataset.targets is not None:
        outputs = _outputs(model, dataset, min(batch_size, LM_BATCH), progress)
        nll, count = perplexity_terms(outputs, dataset.targets)
        value = float(np.exp(nll / count))
        return Evaluation(dataset.name, len(dataset), "perplexity", value,
                          {"perplexity": value, "tokens": float(count)})
    outputs = _outputs(model, dataset, batch_size, progress)
    if dataset.reference is not None:
        embeddings = np.concatenate([_pooled(out, feed) for feed, out in outputs])
        metrics = encoder_metrics(embeddings, dataset.reference, dataset.pairs)
        return Evaluation(dataset.name, len(dataset), ENCODER_METRIC, metrics[ENCODER_METRIC],
                          metrics)
    correct, start = 0, 0
    for _, logits in outputs:
        if logits.ndim != 2:
            raise BadInputError("the first output is not [N, classes]")
        correct += int((logits.argmax(1) == dataset.labels[start : start + len(logits)]).sum())
        start += len(logits)
    accuracy = correct / len(dataset)
    return Evaluation(dataset.name, len(dataset), "top1_accuracy", accuracy,
                      {"top1_accuracy": accuracy})


def perplexity_terms(outputs: Iterator[tuple[dict, np.ndarray]], targets: np.ndarray
                     ) -> tuple[float, int]:
    """(sum of negative log-likelihoods, number of scored tokens) of ``targets`` [N, S]
    (-1: not scored) under each batch's logits [B, S, vocab], in float64."""
    total, count, start = 0.0, 0, 0
    for _, logits in outputs:
        if logits.ndim != 3:
            raise BadInputError(f"the first output has shape {list(logits.shape)}; a causal "
                                "language model's is [N, S, vocab] logits")
        want = targets[start:start + len(logits)]
        start += len(logits)
        scored = want >= 0
        chosen = logits[scored].astype(np.float64)  # [T, vocab]
        top = chosen.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(chosen - top).sum(axis=1)) + top[:, 0]
        total += float((log_norm - chosen[np.arange(len(chosen)), want[scored]]).sum())
        count += int(scored.sum())
    return total, count


def divergence(model: ModelSource, reference: ModelSource, data: str | os.PathLike | Dataset,
               *, progress: bool | None = None) -> float:
    """Mean ``KL(reference || model)`` in nats over the scored tokens of a causal LM data
    set (``targets`` >= 0): how far the model's next-token distributions moved from the
    reference's. Unlike perplexity it cannot improve by chance: on SmolLM2's 7.4k scored
    tokens, a 10% magnitude pruning scored below fp32's perplexity."""
    dataset = data if isinstance(data, Dataset) else load_dataset(os.fspath(data))
    if dataset.targets is None:
        raise BadInputError(f"{dataset.name}: has no 'targets': divergence is for causal "
                            "language models")
    total, count, start = 0.0, 0, 0
    for (_, got), (_, want) in zip(_outputs(model, dataset, LM_BATCH, progress),
                                   _outputs(reference, dataset, LM_BATCH, False)):
        scored = dataset.targets[start:start + len(got)] >= 0
        start += len(got)
        p_log, q_log = _log_softmax(want[scored]), _log_softmax(got[scored])
        total += float((np.exp(p_log) * (p_log - q_log)).sum())
        count += int(scored.sum())
    return total / max(count, 1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _outputs(
    model: ModelSource, dataset: Dataset, batch_size: int, progress: bool | None
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """``(feed, first output)`` per batch; only the data set's inputs are fed, in
    consecutive slices of ``batch_size`` (the same slice of every input)."""
    source = os.fspath(model) if isinstance(model, (str, Path)) else model
    if isinstance(source, str):
        load(source)  # one-line errors for a corrupt file before ONNX Runtime sees it
    runner = Runner(source if isinstance(source, str) else load(source))
    missing = [name for name in runner.input_names if name not in dataset.inputs]
    if missing:
        raise BadInputError(f"{dataset.name}: no array for model input {missing[0]!r}")
    first = runner.output_names[0]
    # a model compiled with static shapes (static-shapes, the tensorrt target) takes one
    # batch size only: run in those, the last one padded and cut back
    sizes = {arg.shape[0] if arg.shape else None for arg in runner.session.get_inputs()}
    fixed = sizes.pop() if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None
    batch_size = fixed or batch_size
    total = -(-len(dataset) // batch_size)
    hidden = None if progress is None else not progress
    for feed in tqdm(dataset.batches(batch_size), desc="evaluate", total=total, disable=hidden,
                     leave=False):
        count = len(next(iter(feed.values())))
        if fixed is None or count == fixed:
            yield feed, runner.run(feed)[first]
            continue
        padded = {k: np.concatenate([v, np.repeat(v[:1], fixed - count, 0)])
                  for k, v in feed.items()}
        yield feed, runner.run(padded)[first][:count]


def _pooled(output: np.ndarray, feed: dict[str, np.ndarray]) -> np.ndarray:
    if output.ndim == 2:
        return output
    if output.ndim == 3:
        return mean_pool(output, feed.get("attention_mask"))
    raise BadInputError(f"the first output has shape {list(output.shape)}; an encoder's is "
                        "[N, D] embeddings or [N, S, D] token states")
