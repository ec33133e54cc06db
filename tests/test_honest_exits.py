"""One honest exit per failure (issue 22: T1, T3, T4, U1, exit codes): a defect of the input
model is named as the input's (exit 2), not as "pass 'dce' broke the IR" or a traceback
with exit 0; data ONNX Runtime would refuse is refused first, naming the array; a lint
failure exits 1; an ONNX Runtime failure inside a pass names the pass; every failure is
one stderr line at the file descriptor, with the model's names unable to break it, and
other libraries' warnings stay off stderr."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from job_guard import run_job
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError, PassFailedError
from onnxpress.passes.base import Pass, PassStats

FLOAT = TensorProto.FLOAT


def _save(folder: Path, nodes, inputs, outputs, initializers=(), name="m.onnx",
          opset=17, ir_version=IR_VERSION) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = folder / name
    onnx.save(helper.make_model(graph, ir_version=ir_version,
                                opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _x(name: str = "x", dtype: int = FLOAT, shape=(2, 4)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _relu_on_strings(folder: Path, name: str = "x") -> Path:
    return _save(folder, [helper.make_node("Relu", [name], ["y"])],
                 [_x(name, TensorProto.STRING, [2])], [_x("y", TensorProto.STRING, [2])])


_INVALID: dict[str, tuple[Callable[[Path], Path], str]] = {
    "relu on strings": (_relu_on_strings, "has unsupported type: tensor(string)"),
    "mismatched matmul": (lambda f: _save(
        f, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_x()], [_x("y", shape=(2, 3))],
        [numpy_helper.from_array(np.ones((3, 5), np.float32), "w")]),
        "Incompatible dimensions for matrix multiplication"),
    "cycle": (lambda f: _save(
        f, [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("Identity", ["a"], ["y"])], [_x()], [_x("y")]),
        "'b' is used before it is defined (nodes out of order, or a cycle)"),
    "missing input": (lambda f: _save(
        f, [helper.make_node("Add", ["x", "nowhere"], ["y"])], [_x()], [_x("y")]),
        "'nowhere' is defined nowhere"),
    "duplicate node outputs": (lambda f: _save(
        f, [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["y"])],
        [_x()], [_x("y")]), "Output 'y' is redeclared"),
}


@pytest.mark.parametrize("case", sorted(_INVALID))
@pytest.mark.parametrize("extra", [[], ["--check"], ["--passes", "dce"]])
def test_defects_of_the_input_are_named_as_the_inputs(
        case: str, extra: list[str], tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    make, detail = _INVALID[case]
    model = make(tmp_path)
    run_job(["compile", model, "-o", tmp_path / "o.onnx", *extra], capfd, code=2,
            match=detail, watch=[tmp_path])


def test_names_cannot_break_the_one_line(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """A model's names are untrusted: a terminal escape or a line break in one, quoted by
    ONNX Runtime's message, must not reach stderr raw."""
    for name in ("x\x1b[31mred", "x\nFAKE LINE"):
        model = _relu_on_strings(tmp_path, name)
        (line,) = run_job(["compare", model, model], capfd, code=2,
                          match="ONNX Runtime cannot load the model", watch=[tmp_path])
        assert "\x1b" not in line and "\n" not in line


def _matmul(folder: Path) -> Path:
    return _save(folder, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_x(shape=("n", 4))],
                 [_x("y", shape=("n", 3))],
                 [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])


@pytest.mark.parametrize(("array", "detail"), [
    (np.ones((2, 4), np.int32) * 10**6, "holds int32, the input takes float32"),
    (np.array([["a"] * 4] * 2), "holds <U1, the input takes float32"),
    (np.ones((2, 5), np.float32), "has shape [2, 5], the input takes [n, 4]"),
    (np.ones((2, 4, 4, 4), np.float32), "has shape [2, 4, 4, 4], the input has 2 dims"),
])
def test_data_that_onnx_runtime_would_refuse_is_refused_first(
        array: np.ndarray, detail: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """T3: wrong dtypes and shapes reached ONNX Runtime, and `compare` called its refusal
    an internal error; float64 and int64 data (numpy's defaults) are cast, not refused."""
    model = _matmul(tmp_path)
    data = tmp_path / "d.npz"
    np.savez(data, x=array)
    for argv in (["compile", model, "-o", tmp_path / "o.onnx", "--check", "--calibration",
                  data], ["compare", model, model, "--data", data]):
        run_job(argv, capfd, code=2, match=detail, watch=[tmp_path])
    np.savez(data, x=np.ones((2, 4), np.float64))
    run_job(["compare", model, model, "--data", data], capfd, code=0, watch=[tmp_path])


def test_other_libraries_stay_off_stderr(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """T4: folding 1/0 makes numpy warn; a successful compile prints nothing on stderr."""
    zero = numpy_helper.from_array(np.zeros((4,), np.float32), "zero")
    one = numpy_helper.from_array(np.ones((4,), np.float32), "one")
    model = _save(tmp_path, [helper.make_node("Div", ["one", "zero"], ["inf"]),
                             helper.make_node("Log", ["zero"], ["minus_inf"]),
                             helper.make_node("Add", ["inf", "minus_inf"], ["nan"]),
                             helper.make_node("Add", ["x", "nan"], ["y"])],
                  [_x()], [_x("y")], [zero, one])
    out = tmp_path / "o.onnx"
    err = run_job(["compile", model, "-o", out], capfd, code=0, watch=[tmp_path],
                  outputs=[out])
    assert err == []


def test_a_strict_lint_failure_exits_1(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run_job(["compile", _matmul(tmp_path), "-o", tmp_path / "o.onnx", "--target", "tensorrt",
             "--passes", "lint-tensorrt(strict=true)"], capfd, code=1,
            match="lint-tensorrt: dynamic-shape", watch=[tmp_path])


@dataclasses.dataclass(frozen=True)
class _RunsABrokenModel(Pass):
    """Asks ONNX Runtime to load a model it built wrong (a pass's bug)."""

    name = "runs-broken"

    def call(self, model):
        broken = onnx.helper.make_model(onnx.helper.make_graph(
            [helper.make_node("MatMul", ["x", "x"], ["y"])], "g", [_x()], [_x("y")]),
            ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", 17)])
        Runner(broken.SerializeToString())
        return PassStats(model, modified=False)


@dataclasses.dataclass(frozen=True)
class _RunsTheUsersModel(Pass):
    """Runs the model it is given on a feed ONNX Runtime refuses."""

    name = "runs-users"

    def call(self, model):
        Runner(model).run({"x": np.ones((3, 3), np.float32)})
        return PassStats(model, modified=False)


def test_onnx_runtime_failures_inside_a_pass_name_the_pass(tmp_path: Path) -> None:
    model = _matmul(tmp_path)
    with pytest.raises(PassFailedError, match="pass 'runs-broken': ONNX Runtime cannot load"):
        onnxpress.compile(model, [_RunsABrokenModel()])
    with pytest.raises(BadInputError, match="pass 'runs-users': ONNX Runtime cannot run the "
                                            r"model on x float32\[3, 3\]"):
        onnxpress.compile(model, [_RunsTheUsersModel()])


@pytest.mark.parametrize("extra", [["--passes", "cleanup"], ["--opset", "17"],
                                   ["--passes", "cleanup,fuse-for-ort", "--check"]])
def test_initializer_inputs_stay_inputs_when_asked(
        extra: list[str], tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """An old exporter's initializer listed as an input stays overridable with
    --keep-initializer-inputs, through every load the job makes."""
    model = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [_x(), _x("w", shape=(4, 3))], [_x("y", shape=(2, 3))],
                  [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")], opset=9,
                  ir_version=3)
    out = tmp_path / "o.onnx"
    run_job(["compile", model, "-o", out, "--keep-initializer-inputs", *extra], capfd, code=0,
            watch=[tmp_path], outputs=[out])
    assert [i.name for i in onnx.load(str(out)).graph.input] == ["x", "w"]


def _mlp_with_external_weights(folder: Path) -> Path:
    weights = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    path = _save(folder, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_x()],
                 [_x("y", shape=(2, 3))], [weights])
    model = onnx.load(str(path))
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    return path


def _set(path: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(path), load_external_data=False)
    edit(model)
    onnx.save(model, path)


def _external(model: onnx.ModelProto, key: str, value: str) -> None:
    entries = model.graph.initializer[0].external_data
    for entry in entries:
        if entry.key == key:
            entry.value = value
            return
    entries.add(key=key, value=value)


def _inline_grown(model: onnx.ModelProto, folder: Path) -> None:
    """The weights read into the file, their first dim grown past what the bytes hold."""
    tensor = model.graph.initializer[0]
    load_external_data_for_tensor(tensor, str(folder))
    tensor.ClearField("data_location")
    del tensor.external_data[:]
    tensor.dims[0] = 5


_DAMAGED: dict[str, tuple[Callable[[Path], None], str]] = {
    "external data cut short": (
        lambda p: (p.parent / "w.bin").write_bytes((p.parent / "w.bin").read_bytes()[:20]),
        "reads bytes 0..48 of 'w.bin', which holds 20"),
    "offset past the end": (lambda p: _set(p, lambda m: _external(m, "offset", "99999")),
                            "reads bytes 99999..100047"),
    "length that disagrees": (lambda p: _set(p, lambda m: _external(m, "length", "8")),
                              "declares 8 bytes of external data; its type and dims need 48"),
    "dims the data does not fill": (lambda p: _set(p, lambda m: _inline_grown(m, p.parent)),
                                    "holds data that does not fit its type FLOAT and dims "
                                    "[5, 3]"),
    "no element type": (lambda p: _set(p, lambda m: setattr(m.graph.initializer[0],
                                                            "data_type", 0)),
                        "has no element type"),
}


@pytest.mark.parametrize("case", sorted(_DAMAGED))
def test_damaged_tensors_are_refused_naming_the_tensor(
        case: str, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Tensors whose bytes do not match their type and dims failed deep inside a pass or
    the writer as "internal error" (found by tests/test_fuzz.py)."""
    model = _mlp_with_external_weights(tmp_path)
    damage, detail = _DAMAGED[case]
    damage(model)
    for argv in (["compile", model, "-o", tmp_path / "o.onnx"], ["inspect", model],
                 ["compare", model, model]):
        run_job(argv, capfd, code=2, match=detail, watch=[tmp_path])


def test_text_that_is_not_utf8_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture
                                          ) -> None:
    """A bit flip in a name: protobuf hands the field over as bytes, which broke every
    consumer after it (onnx's schema lookup, onnx_ir's writer, path joins)."""
    model = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="nodeA")], [_x()],
                  [_x("y")])
    model.write_bytes(model.read_bytes().replace(b"nodeA", b"node\xff"))
    run_job(["compile", model, "-o", tmp_path / "o.onnx"], capfd, code=2,
            match="the text field model.graph.node[0].name is not UTF-8", watch=[tmp_path])


def test_a_model_that_fails_both_validators_is_refused(tmp_path: Path,
                                                       capfd: pytest.CaptureFixture) -> None:
    """Nothing would hold the output to anything: refused. A model only one of them
    rejects (opset 1, which this ONNX Runtime has no kernels for) is compiled and held to
    the other (tests/passes/test_validity.py)."""
    x, y = _x(), _x("y")
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])],
                                                  "g", [x], [y]),
                                ir_version=99, opset_imports=[helper.make_opsetid("", 17)]),
              model)
    run_job(["compile", model, "-o", tmp_path / "o.onnx"], capfd, code=2,
            match="the input model fails onnx.checker (Your model ir_version 99 is higher",
            watch=[tmp_path])
    old = _save(tmp_path, [helper.make_node("Add", ["x", "x"], ["y"])], [x], [y], opset=1,
                ir_version=3, name="old.onnx")
    out = tmp_path / "o.onnx"
    run_job(["compile", old, "-o", out], capfd, code=0, watch=[tmp_path], outputs=[out])
    onnx.checker.check_model(str(out))


def test_a_stack_of_scalar_samples_feeds_0d_arrays(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture) -> None:
    """A bool[] If condition given as shape (8,) data: eight samples, each a 0-d array
    (numpy scalars, which ONNX Runtime refuses, used to be fed)."""
    branch = [helper.make_graph([helper.make_node(op, ["x"], [name])], name, [],
                                [_x(name)]) for op, name in (("Relu", "a"), ("Neg", "b"))]
    model = _save(tmp_path, [helper.make_node("If", ["c"], ["y"], then_branch=branch[0],
                                              else_branch=branch[1])],
                  [_x(), _x("c", TensorProto.BOOL, ())], [_x("y")])
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((8, 2, 4), np.float32), c=np.arange(8) % 2 == 0)
    out = tmp_path / "o.onnx"
    run_job(["compile", model, "-o", out, "--check", "--calibration", data], capfd, code=0,
            watch=[tmp_path], outputs=[out])
