"""The committed digits models reach their stated accuracy, measured by ``evaluate`` on the
shipped test split and, independently, by ONNX Runtime + numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxpress
from onnxpress.models.datasets import NAMED

MODELS = Path(onnxpress.models.__file__).parent


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_committed_model_reaches_97_percent(name: str) -> None:
    path = MODELS / f"{name}.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    result = onnxpress.evaluate(path, "digits")
    assert result.samples == 450
    assert result.value >= 0.97
    with np.load(NAMED["digits"]) as data:
        images, labels = data["image"], data["label"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": images})[0]
    assert result.value == pytest.approx(float(np.mean(logits.argmax(1) == labels)), abs=1e-12)


def test_vit_has_at_least_64_tokens() -> None:
    model = onnx.load(MODELS / "digits_vit.onnx")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    token_counts = [
        info.type.tensor_type.shape.dim[1].dim_value
        for info in inferred.graph.value_info
        if len(info.type.tensor_type.shape.dim) == 3
    ]
    assert max(token_counts) >= 65  # 64 patches + CLS
