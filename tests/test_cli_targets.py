"""The CLI's target flags: ``--target tensorrt`` (static shapes, the lint, the engine step
that says why it is skipped), ``--ort-optimized``, and execution providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import onnxpress
from onnxpress.backends.tensorrt_engine import unavailable
from onnxpress.cli import main
from onnxpress.models import small_cnn_path


def test_tensorrt_target_pins_shapes_lints_and_explains_a_skipped_engine(
        tmp_path: Path, capsys) -> None:
    out, engine = tmp_path / "trt.onnx", tmp_path / "trt.plan"
    assert main(["compile", "-o", str(out), "--target", "tensorrt", "--engine", str(engine)]) == 0
    printed = capsys.readouterr().out
    assert "static-shapes" in printed and "lint-tensorrt" in printed
    (value,) = onnx.load(out).graph.input
    assert all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
    reason = unavailable()
    if reason is not None:  # CI: no tensorrt, no GPU
        assert f"TensorRT engine build skipped: {reason}" in printed
        assert not engine.exists()
    else:
        assert engine.exists() and "cosine" in printed


def test_engine_needs_the_tensorrt_target(tmp_path: Path, capsys) -> None:
    assert main(["compile", "-o", str(tmp_path / "o.onnx"), "--engine", "e.plan"]) == 2
    assert "--target tensorrt" in capsys.readouterr().err


def test_ort_optimized_model_is_saved_and_computes_the_same(tmp_path: Path, capsys) -> None:
    out, optimized = tmp_path / "o.onnx", tmp_path / "opt.onnx"
    assert main(["compile", str(small_cnn_path()), "-o", str(out), "--ort-optimized",
                 str(optimized)]) == 0
    assert "extended-optimised model" in capsys.readouterr().out
    x = {"image": np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    got = ort.InferenceSession(optimized, options).run(None, x)[0]
    want = ort.InferenceSession(small_cnn_path()).run(None, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_providers_are_checked_with_one_line(tmp_path: Path, capsys) -> None:
    model = str(small_cnn_path())
    assert main(["bench", model, "--provider", "cpu", "--repeats", "2"]) == 0
    capsys.readouterr()
    missing = "NoSuchExecutionProvider"
    assert main(["compare", model, model, "--provider", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0] and "CPUExecutionProvider" in err[0]
    rows = onnxpress.compare(model, model, provider="cpu")
    assert rows[0]["max_abs"] == 0
