"""A candidate judged against the budget on a data set, against an independent count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxpress
from onnxpress.autotune.budget import parse_budget
from onnxpress.autotune.judge import judge
from onnxpress.backends.ort_runner import Runner
from onnxpress.models.datasets import load_dataset

MODELS = Path(onnxpress.models.__file__).parent
CNN = MODELS / "digits_cnn.onnx"


def _top1(path: Path) -> float:
    """Top-1 on the digits test set, counted here with ONNX Runtime directly."""
    data = load_dataset("digits")
    runner = Runner(str(path))
    name = next(iter(data.inputs))
    logits = runner.run({name: data.inputs[name]})
    return float((next(iter(logits.values())).argmax(1) == data.labels).mean())


def _damaged(tmp_path: Path, scale: float) -> Path:
    """The digits CNN with noise on its first Conv weight: a worse model to judge."""
    proto = onnx.load(CNN)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    weight = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    array = numpy_helper.to_array(weight)
    noisy = array + np.random.default_rng(0).normal(0, scale * array.std(), array.shape)
    weight.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), weight.name))
    path = tmp_path / f"damaged_{scale}.onnx"
    onnx.save(proto, path)
    return path


def test_top1_budget_is_judged_on_the_data_against_the_original(tmp_path: Path) -> None:
    budget = parse_budget("top1>=-1pt")
    original = _top1(CNN)
    same = judge(budget, CNN, CNN, "digits")
    assert same.value == pytest.approx(original) and same.original == pytest.approx(original)
    assert same.holds and same.slack == pytest.approx(0.01)
    broken = _damaged(tmp_path, 3.0)
    verdict = judge(budget, broken, CNN, "digits", original_value=original)
    assert verdict.value == pytest.approx(_top1(broken))
    assert verdict.holds == (verdict.value >= original - 0.01)
    assert not verdict.holds  # three times the weights' spread in noise


def test_cosine_budget_needs_no_labels_and_sees_the_damage(tmp_path: Path) -> None:
    budget = parse_budget("cosine>=0.995")
    assert judge(budget, CNN, CNN, "digits").value == pytest.approx(1.0)
    slight, heavy = (judge(budget, _damaged(tmp_path, s), CNN, "digits") for s in (0.01, 1.0))
    assert 0.995 < slight.value < 1.0 and slight.holds
    assert heavy.value < slight.value and not heavy.holds


def test_a_metric_the_data_set_does_not_measure_is_refused(tmp_path: Path) -> None:
    with pytest.raises(onnxpress.BadInputError, match="measures top1_accuracy, not spearman"):
        judge(parse_budget("spearman>=0.99"), CNN, CNN, "digits")
