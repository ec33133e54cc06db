"""``--check`` never passes on nothing (issue 22, C1): calibration data with no samples,
an input model that itself gives NaN on the check inputs, and weights above what the check
keeps in memory are each refused in one line (exit 2) instead of "ok" with exit 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.cli import main
from onnxpress.errors import BadInputError
from onnxpress.passes import manager


def _model(path: Path, op: str = "Relu") -> Path:
    nodes = [helper.make_node("Sub", ["x", "ten"], ["s"]), helper.make_node(op, ["s"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(10, np.float32), "ten")])
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_calibration_with_no_samples_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    model = _model(tmp_path / "m.onnx")
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 4), np.float32))
    out = tmp_path / "out.onnx"
    assert main(["compile", str(model), "-o", str(out), "--check",
                 "--calibration", str(empty)]) == 2
    assert "no samples" in _one_line(capsys)
    assert not out.exists()


def test_an_input_model_giving_nan_is_not_compared(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Log(x - 10) on inputs below 10: NaN in the original, so 'max|diff| 0' would say
    nothing about the compiled model."""
    model = _model(tmp_path / "m.onnx", op="Log")
    out = tmp_path / "out.onnx"
    assert main(["compile", str(model), "-o", str(out), "--check"]) == 2
    line = _one_line(capsys)
    assert "gives NaN or infinity for output 'y'" in line and "--calibration" in line
    assert not out.exists()


def test_a_model_too_large_to_check_is_refused_not_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "CHECK_MAX_BYTES", 2)
    with pytest.raises(BadInputError, match="exceed the .* the check keeps in memory"):
        onnxpress.compile(_model(tmp_path / "m.onnx"), check=True)
    onnxpress.compile(_model(tmp_path / "m.onnx"))  # without --check it still compiles
