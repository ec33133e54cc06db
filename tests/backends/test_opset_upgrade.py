"""Old opsets: a verified upgrade by whichever converter supports the source, so opset 7-12
exports are quantized instead of refused, ``--opset 18`` writes a model ONNX Runtime loads,
and a conversion that cannot be done is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.backends.opset_upgrade import upgrade
from onnxpress.cli import main
from onnxpress.errors import BadInputError

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _opset11_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> ReduceMean(axes attribute) -> Squeeze(axes attribute) -> Gemm, as
    opset-11 exporters write them (both attributes became inputs at 13 and 18)."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
            for n, s in (("w", (16, 3, 3, 3)), ("b", (16,)), ("fc", (10, 16)), ("fb", (10,)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=1),
         helper.make_node("Squeeze", ["m"], ["s"], axes=[2, 3]),
         helper.make_node("Gemm", ["s", "fc", "fb"], ["y"], transB=1)],
        "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_an_opset_11_export_is_quantized_after_a_verified_upgrade(tmp_path: Path) -> None:
    proto = _opset11_cnn()
    rng = np.random.default_rng(1)
    data = tmp_path / "calib.npz"
    np.savez(data, x=rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    # int8 with its Convs (the preset's cost rule keeps them float on ORT CPU)
    model, report = onnxpress.compile(proto, "int8(cost=false)", calibration=data,
                                      return_report=True)
    notes = [n for p in report.passes for n in p.notes]
    assert any("converted from 11 to 13 by onnx's converter: outputs agree" in n for n in notes)
    out = onnxpress.to_proto(model)
    assert out.opset_import[0].version >= 13
    ops = {n.op_type for n in out.graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear", "ConvInteger"}
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    want, got = _run(proto, x), _run(out, x)
    cosine = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    assert cosine > 0.99


def test_opset_18_from_11_writes_a_model_onnx_runtime_loads(tmp_path: Path, capsys) -> None:
    """onnxscript's converter starts at 18 and left ReduceMean's axes attribute in place
    (ONNX Runtime refused the file, exit 0); onnx's converter moves it to an input."""
    source, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(_opset11_cnn(), source)
    assert main(["compile", str(source), "-o", str(out), "--opset", "18", "--check"]) == 0
    assert "converted from 11 to 18 by onnx's converter" in capsys.readouterr().out
    written = onnx.load(out)
    assert written.opset_import[0].version == 18
    (reduce,) = [n for n in written.graph.node if n.op_type == "ReduceMean"]
    assert len(reduce.input) == 2 and not reduce.attribute[1:]
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(str(out), x), _run(str(source), x), rtol=1e-5, atol=1e-6)


def test_an_opset_9_caffe2_export_from_the_onnx_wheel_is_quantized(tmp_path: Path) -> None:
    """light_squeezenet (onnx-caffe2, opset 9, IR 3: initializers listed as inputs)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "calib.npz"
    np.savez(data, data_0=rng.random((2, 3, 224, 224)).astype(np.float32))
    out = tmp_path / "o.onnx"
    assert main(["compile", str(LIGHT / "light_squeezenet.onnx"), "-o", str(out),
                 "--passes", "int8(cost=false)", "--calibration", str(data), "--check",
                 "--tolerance", "0.05"]) == 0
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear"}


def test_a_conversion_no_converter_can_do_is_refused_in_one_line(tmp_path: Path,
                                                                 capsys) -> None:
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"], start=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [1])])
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 15)])
    with pytest.raises(BadInputError, match=r"cannot convert the model from opset 15 to 13: "
                                            r"onnx's converter failed .*; onnxscript's"):
        upgrade(onnxpress.load(proto), 13)
    source = tmp_path / "m.onnx"
    onnx.save(proto, source)
    assert main(["compile", str(source), "-o", str(tmp_path / "o.onnx"), "--opset", "13"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_one_shot_calibration_stream_serves_the_upgrade_and_the_calibration() -> None:
    """The upgrade's check reads the first batches of the data: a generator must still give
    them to the calibration (two batches, both would have been used up)."""
    rng = np.random.default_rng(3)
    batches = [{"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    model, report = onnxpress.compile(_opset11_cnn(), "quantize",
                                      calibration=(b for b in batches), return_report=True)
    assert report.passes[0].stats["weights"] == 2
    assert any("converted from 11 to 13" in n for n in report.passes[0].notes)
