"""Model inputs as they are (``backends.inputs``): sample axes of scalars and state inputs,
integer ranges, data arrays split into batches, symbolic dims for random data; and the
compile paths (``--check``, calibration) that used to slice every array on axis 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.backends.inputs import DEFAULT_DIM, ModelInputs
from onnxpress.cli import main
from onnxpress.errors import BadInputError
from onnxpress.passes.calibration_data import CalibrationData
from onnxpress.passes.numeric_check import compare_outputs


def _vad_like(batch: str | None = None) -> onnx.ModelProto:
    """Silero-VAD's signature: audio[B, T], state[2, B, 8], a scalar int64 sample rate;
    out = audio @ W * (sr / 16000) summed with the state's mean, new state passed on."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W")
    rate = numpy_helper.from_array(np.array(16000.0, np.float32), "rate")
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["audio", "zero", "sixteen", "one"], ["head"]),
            helper.make_node("MatMul", ["head", "W"], ["proj"]),
            helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["srf", "rate"], ["gain"]),
            helper.make_node("Mul", ["proj", "gain"], ["scaled"]),
            helper.make_node("ReduceMean", ["state", "axes"], ["pooled"], keepdims=0),
            helper.make_node("Transpose", ["pooled"], ["pooled_t"], perm=[0, 1]),
            helper.make_node("ReduceMean", ["pooled_t", "axes0"], ["bias"], keepdims=0),
            helper.make_node("Unsqueeze", ["bias", "axes1"], ["bias_col"]),
            helper.make_node("Add", ["scaled", "bias_col"], ["out"]),
            helper.make_node("Identity", ["state"], ["new_state"]),
        ],
        "vad",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, [batch, None]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("new_state", TensorProto.FLOAT, None),
        ],
        [
            weight, rate,
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([16], np.int64), "sixteen"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([2], np.int64), "axes"),
            numpy_helper.from_array(np.array([0], np.int64), "axes0"),
            numpy_helper.from_array(np.array([1], np.int64), "axes1"),
        ],
    )
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 18)])


def _inputs(proto: onnx.ModelProto, **kw) -> ModelInputs:
    return ModelInputs.of(onnxpress.load(proto), **kw)


@pytest.mark.parametrize("batch", [None, "batch"])
def test_state_and_scalar_inputs_have_their_own_sample_axis(batch) -> None:
    inputs = _inputs(_vad_like(batch))
    axes = {spec.name: spec.sample_axis for spec in inputs.specs}
    assert axes == {"audio": 0, "state": 1, "sr": None}
    feeds = inputs.random(seed=0, batch=3)
    assert feeds["audio"].shape == (3, DEFAULT_DIM)
    assert feeds["state"].shape == (2, 3, 8)
    assert feeds["sr"].shape == () and feeds["sr"].dtype == np.int64


def test_fixed_shape_inputs_beside_a_batched_one_are_fed_whole() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "table"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3]),
         helper.make_tensor_value_info("table", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("pinned", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    inputs = _inputs(helper.make_model(graph, ir_version=IR_VERSION))
    assert [s.sample_axis for s in inputs.specs] == [0, None, 0]
    batches = list(inputs.batches({"x": np.ones((5, 4, 3)), "table": np.ones((4, 3)),
                                   "pinned": np.ones((1, 3))}, 2))
    assert [b["x"].shape[0] for b in batches] == [2, 2, 1]
    assert all(b["table"].shape == (4, 3) and b["pinned"].shape == (1, 3) for b in batches)


def test_data_arrays_split_along_each_inputs_sample_axis() -> None:
    inputs = _inputs(_vad_like("batch"))
    audio = np.arange(5 * 20, dtype=np.float32).reshape(5, 20)
    state = np.arange(2 * 5 * 8, dtype=np.float32).reshape(2, 5, 8)
    batches = list(inputs.batches({"audio": audio, "state": state, "sr": np.array(8000)}, 2))
    assert [b["audio"].shape for b in batches] == [(2, 20), (2, 20), (1, 20)]
    assert [b["state"].shape for b in batches] == [(2, 2, 8), (2, 2, 8), (2, 1, 8)]
    np.testing.assert_array_equal(batches[1]["state"], state[:, 2:4])
    assert all(int(b["sr"]) == 8000 for b in batches)
    # a stack of single-sample feeds (one more axis) is joined along the sample axis
    stacked = np.stack([state[:, i:i + 1] for i in range(5)])  # [5, 2, 1, 8]
    joined = list(inputs.batches({"audio": audio, "state": stacked}, 2))
    np.testing.assert_array_equal(joined[0]["state"], state[:, 0:2])
    # a stack for an input without a sample axis: one sample a batch
    per_sample = list(inputs.batches({"audio": audio, "sr": np.full(5, 16000)}, 2))
    assert len(per_sample) == 5 and per_sample[0]["sr"].shape == ()
    first = inputs.first(batches[0])
    assert first["state"].shape == (2, 1, 8) and first["audio"].shape == (1, 20)


def test_data_that_does_not_fit_is_refused_naming_the_input() -> None:
    inputs = _inputs(_vad_like("batch"))
    with pytest.raises(BadInputError, match=r"disagree on the number of samples \(audio: 5, "
                                            r"state: 4\)"):
        list(inputs.batches({"audio": np.ones((5, 20)), "state": np.ones((2, 4, 8))}))
    with pytest.raises(BadInputError, match=r"array 'state' has shape \[8\], the input has 3"):
        list(inputs.batches({"state": np.ones(8)}))


def test_integer_inputs_range_over_the_table_they_index() -> None:
    table = numpy_helper.from_array(np.ones((100, 4), np.float32), "embedding")
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["ids", "ax"], ["ids2"]),
         helper.make_node("Gather", ["embedding", "ids2"], ["emb"]),
         helper.make_node("Cast", ["bytes"], ["bf"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"]),
         helper.make_tensor_value_info("bytes", TensorProto.UINT8, ["b", 64]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("emb", "bf", "mf")],
        [table, numpy_helper.from_array(np.array([0], np.int64), "ax")])
    inputs = _inputs(helper.make_model(graph, ir_version=IR_VERSION))
    ranges = {s.name: s.int_range for s in inputs.specs}
    assert ranges == {"ids": (0, 100), "bytes": (0, 256), "mask": (0, 2)}
    feeds = inputs.random(seed=1, batch=4, dims={"s": 7})
    assert feeds["ids"].shape == (4, 7) and feeds["mask"].shape == (4, 7)
    assert feeds["ids"].max() > 1 and feeds["ids"].max() < 100
    assert feeds["bytes"].max() > 1


def test_shapes_and_dims_by_name_and_their_errors() -> None:
    proto = _vad_like("batch")
    inputs = _inputs(proto, shapes={"audio": (2, 512)})
    feeds = inputs.random(seed=0, dims={"batch": 2})
    assert feeds["audio"].shape == (2, 512) and feeds["state"].shape == (2, 2, 8)
    assert inputs.guessed_dims({"batch": 2}) == []
    assert _inputs(proto).guessed_dims() == ["audio[1]"]
    with pytest.raises(BadInputError, match="'images', which is not an input"):
        _inputs(proto, shapes={"images": (1, 3)})
    with pytest.raises(BadInputError, match="--input-shape audio: 3 dims given"):
        _inputs(proto, shapes={"audio": (1, 3, 4)})
    with pytest.raises(BadInputError, match="--dim names 'height'"):
        _inputs(proto).check_dims({"height": 4})


def test_check_and_calibration_take_scalar_and_state_inputs(tmp_path: Path, capsys) -> None:
    """A calibration file with a scalar sr and a state without samples on axis 0 used to
    crash ``CalibrationData`` ("internal error"); --check's random inputs made the state's
    unknown dims 1. Both run now, and int8 quantizes the MatMul."""
    model = tmp_path / "vad.onnx"
    onnx.save(_vad_like(), model)
    data = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(data, audio=rng.standard_normal((8, 32)).astype(np.float32),
             state=rng.standard_normal((2, 8, 8)).astype(np.float32), sr=np.array(16000))
    out = tmp_path / "o.onnx"
    assert main(["compile", str(model), "-o", str(out), "--check"]) == 0
    assert main(["compile", str(model), "-o", str(out), "--passes", "quantize,fold-qdq",
                 "--calibration", str(data), "--check", "--tolerance", "0.05"]) == 0
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "DequantizeLinear" in ops
    batches = list(CalibrationData(data).for_model(_inputs(_vad_like())))
    assert len(batches) == 8 and batches[0]["state"].shape == (2, 1, 8)
    capsys.readouterr()


def test_check_on_random_inputs_that_the_input_model_rejects_says_what_to_give(
        tmp_path: Path, capsys) -> None:
    """A Reshape that needs 12 elements per sample fails on a guessed dim: the one line
    says so, names the guessed dim and the options, and blames no pass."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([-1, 3, 4], np.int64), "shape")])
    model = tmp_path / "r.onnx"
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), model)
    out = tmp_path / "o.onnx"
    assert main(["compile", str(model), "-o", str(out), "--check"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the input model does not run on random inputs" in line
    assert f"set to {DEFAULT_DIM}: width" in line and "--dim NAME=N" in line
    assert main(["compile", str(model), "-o", str(out), "--check", "--dim", "width=12"]) == 0
    assert main(["compile", str(model), "-o", str(out), "--check",
                 "--input-shape", "x=2,24"]) == 0
    assert main(["compile", str(model), "-o", str(out), "--check", "--dim", "w=0"]) == 2
    assert "--dim 'w=0'" in capsys.readouterr().err


def test_the_check_adds_an_absolute_tolerance_for_tiny_outputs() -> None:
    """A detector's sigmoid output peaking at 5e-4 with float rounding of 1.8e-7 passes at
    the default atol; the same rounding fails with atol 0, and a large output is still held
    to its relative tolerance."""
    tiny = np.array([5e-4, 1e-4, 3e-5], np.float32)
    (check,) = compare_outputs({"p": tiny}, {"p": tiny + 1.8e-7}, tolerance=1e-4, atol=1e-6)
    assert check.ok and check.max_rel > 1e-4
    (strict,) = compare_outputs({"p": tiny}, {"p": tiny + 1.8e-7}, tolerance=1e-4, atol=0)
    assert not strict.ok
    large = np.array([1e3, -2e3], np.float32)
    (big,) = compare_outputs({"y": large}, {"y": large + 1.0}, tolerance=1e-4, atol=1e-6)
    assert not big.ok


def test_the_one_line_names_integer_inputs_drawn_from_zero_and_one(tmp_path: Path,
                                                                   capsys) -> None:
    """silero-vad's sample rate: random integers are 0 or 1, which no branch accepts; the
    error says which inputs were drawn so, next to the dims it guessed."""
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
         helper.make_node("Concat", ["lead", "n1"], ["shape"], axis=0),
         helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0], np.int64), "zero"),
         numpy_helper.from_array(np.array([-1, 4], np.int64), "lead")])
    model = tmp_path / "n.onnx"
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), model)
    assert main(["compile", str(model), "-o", str(tmp_path / "o.onnx"), "--check"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "random inputs (integers drawn from {0, 1}: n)" in line


def test_a_scalar_bool_input_gets_an_array_and_every_command_runs(tmp_path: Path) -> None:
    """A rank-0 bool input (an If condition) is drawn as a 0-d array, not a numpy scalar
    ONNX Runtime cannot take: --check, bench and compare used to end in "internal error"
    (issue 22, T2)."""
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["a"])], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, ir_version=IR_VERSION,
                                opset_imports=[helper.make_opsetid("", 17)]), model)
    feeds = ModelInputs.of(onnxpress.load(model)).random(seed=0)
    assert isinstance(feeds["c"], np.ndarray) and feeds["c"].shape == ()
    out = tmp_path / "out.onnx"
    assert main(["compile", str(model), "-o", str(out), "--check"]) == 0
    assert main(["bench", str(model), "--repeats", "2"]) == 0
    assert main(["compare", str(model), str(out)]) == 0
