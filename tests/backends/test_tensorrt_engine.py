"""The TensorRT engine backend: without tensorrt or a GPU (CI) it refuses with a one-line
reason; where both exist it builds a tiny model and agrees with ONNX Runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpress.backends import tensorrt_engine
from onnxpress.errors import BadInputError

REASON = tensorrt_engine.unavailable()


def _tiny_model(path: Path) -> Path:
    """y = Relu(x @ W) with a static [1, 8] input, small enough for any builder."""
    weight = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)}


def test_build_refuses_with_reason_or_builds(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    engine = tmp_path / "tiny.engine"
    if REASON is None:
        assert tensorrt_engine.build_engine(model, engine, precision="fp32") == str(engine)
        assert engine.stat().st_size > 0
        return
    with pytest.raises(BadInputError) as caught:
        tensorrt_engine.build_engine(model, engine)
    assert str(caught.value).startswith("TensorRT engine build skipped:")
    assert REASON in str(caught.value)
    assert not engine.exists()


def test_unavailable_is_one_line_and_names_missing_tensorrt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert REASON is None or (isinstance(REASON, str) and REASON and "\n" not in REASON)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    reason = tensorrt_engine.unavailable()
    assert reason is not None and "\n" not in reason
    assert "tensorrt" in reason


@pytest.mark.skipif(REASON is not None, reason=f"TensorRT engine build skipped: {REASON}")
def test_fp16_engine_agrees_with_onnxruntime(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    report = tensorrt_engine.engine_report(
        model, tmp_path / "tiny.engine", _feeds(), precision="fp16", runs=5
    )
    assert report.precision == "fp16" and report.latency_ms > 0
    assert [a["output"] for a in report.agreement] == ["y"]
    assert report.agreement[0]["cosine"] > 0.999
    assert report.agreement[0]["max_abs"] < 1e-2
