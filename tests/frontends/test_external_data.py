"""External data is read only from inside the model's folder, for every tensor: the main
graph's initializers, Constant values inside model-local functions (issue 22, S1: such a
location used to be read unchecked, relative to the working directory, and the compiled
output then held the file it named), sparse initializers, through symlinks. Each refusal
is one line, exit 2, no output written, the secret nowhere in the output folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.cli import main
from onnxpress.errors import BadInputError

SECRET = b"root:x:0:0:secret-password-line\n".ljust(16 * 4, b"#")


def _external(name: str, location: str, count: int = 4) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[count],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * count))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _function_model(location: str) -> onnx.ModelProto:
    """y = f(x), f a local function adding a Constant whose value lives in ``location``."""
    constant = helper.make_node("Constant", [], ["c"], value=_external("c", location))
    function = helper.make_function(
        "local", "add_constant", ["x"], ["y"],
        [constant, helper.make_node("Add", ["x", "c"], ["y"])],
        opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("add_constant", ["x"], ["y"], domain="local")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, ir_version=IR_VERSION, functions=[function],
                             opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("local", 1)])


def _job(tmp_path: Path, location: str) -> tuple[Path, Path]:
    """The model in ``tmp_path/job``, the secret beside the job folder; the CLI runs
    from a third folder, so nothing resolves against the working directory."""
    job = tmp_path / "job"
    job.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    model = job / "model.onnx"
    onnx.save(_function_model(location), model)
    return job, model


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("location", ["../secret.bin", "SECRET_ABSOLUTE"])
def test_a_function_constant_outside_the_folder_is_refused(
        location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    if location == "SECRET_ABSOLUTE":
        location = str(tmp_path / "secret.bin")
    job, model = _job(tmp_path, location)
    before = _digest(model)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compile", str(model), "-o", str(job / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outside the model's folder; refused" in err[0], err
    assert "function 'add_constant'" in err[0]
    assert sorted(p.name for p in job.iterdir()) == ["model.onnx"]
    assert _digest(model) == before


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    job, model = _job(tmp_path, "weights.bin")
    (job / "weights.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(BadInputError, match="outside the model's folder; refused"):
        onnxpress.load(model)


def test_a_function_constant_inside_the_folder_is_read_from_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From another working directory, with a decoy of the same name there: the model's own
    file is what the loaded Constant holds, and the compile succeeds."""
    job, model = _job(tmp_path, "weights.bin")
    values = np.arange(4, dtype=np.float32)
    (job / "weights.bin").write_bytes(values.tobytes())
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(np.full(4, 99, np.float32).tobytes())
    monkeypatch.chdir(elsewhere)
    loaded = onnxpress.load(model)
    (function,) = loaded.functions.values()
    (constant,) = [n for n in function if n.op_type == "Constant"]
    np.testing.assert_array_equal(constant.attributes["value"].value.numpy(), values)
    assert main(["compile", str(model), "-o", str(job / "out.onnx")]) == 0


def test_external_data_without_a_folder_is_refused() -> None:
    proto = _function_model("weights.bin")
    for source in (proto, proto.SerializeToString()):
        with pytest.raises(BadInputError, match="load the model from its path"):
            onnxpress.load(source)


def test_a_sparse_initializer_outside_the_folder_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    sparse = helper.make_sparse_tensor(
        _external("w", "../secret.bin", 2),
        helper.make_tensor("w_idx", TensorProto.INT64, [2], [0, 3]), [4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        sparse_initializer=[sparse])
    model = job / "model.onnx"
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), model)
    with pytest.raises(BadInputError, match="sparse initializer 'w' points at "
                                            "'../secret.bin', outside"):
        onnxpress.load(model)
