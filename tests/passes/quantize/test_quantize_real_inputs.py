"""quantize on inputs as exporters leave them: integer image bytes read by a Conv network are
data (quantized), a mask stays an index path, and a quantize that changes nothing says why
(weights inside If bodies)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION, run_ort

import onnxpress
from onnxpress.passes.calibration_data import CalibrationData


def _bytes_cnn(dtype: int = TensorProto.INT32) -> onnx.ModelProto:
    """tf2onnx's shape of an image classifier fed raw bytes: int32[N,8,8,3] -> Cast ->
    Div 255 -> Transpose (NHWC -> NCHW) -> Conv -> Relu -> GlobalAveragePool -> Gemm."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
            for n, s in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (8, 5)), ("fb", (5,)))]
    init.append(numpy_helper.from_array(np.array(255, np.float32), "max"))
    init.append(numpy_helper.from_array(np.array([-1, 8], np.int64), "flat"))
    graph = helper.make_graph(
        [helper.make_node("Cast", ["bytes"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Div", ["f", "max"], ["unit"]),
         helper.make_node("Transpose", ["unit"], ["nchw"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["nchw", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Reshape", ["g", "flat"], ["v"]),
         helper.make_node("Gemm", ["v", "fc", "fb"], ["y"])],
        "bytes_cnn", [helper.make_tensor_value_info("bytes", dtype, ["n", 8, 8, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], init)
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])


def _byte_batches(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"bytes": rng.integers(0, 256, (4, 8, 8, 3)).astype(np.int32)} for _ in range(count)]


def test_integer_bytes_read_by_a_conv_network_are_quantized() -> None:
    """Before: everything downstream of an integer input was an index path, nothing was
    quantized and the file grew."""
    proto = _bytes_cnn()
    model, report = onnxpress.compile(proto, "quantize", calibration=_byte_batches(),
                                      return_report=True)
    stats = report.passes[0].stats
    assert stats["nodes"] == 2 and stats["weights"] == 2, stats
    out = onnxpress.to_proto(model)
    feeds = _byte_batches(1)[0]
    want, got = run_ort(proto, feeds)["y"], run_ort(out, feeds)["y"]
    cosine = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    assert cosine > 0.99


def test_a_mask_from_an_integer_input_stays_an_index_path() -> None:
    """(1 - mask) * -10000 added to float scores feeds no layer directly: left in float,
    while the scores' MatMul is quantized."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(-10000.0, np.float32), "big")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"]),
         helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
         helper.make_node("Sub", ["one", "mf"], ["inv"]),
         helper.make_node("Mul", ["inv", "big"], ["bias"]),
         helper.make_node("Add", ["scores", "bias"], ["y"])],
        "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6]),
                   helper.make_tensor_value_info("mask", TensorProto.INT64, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])], init)
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": rng.standard_normal((4, 6)).astype(np.float32),
             "mask": rng.integers(0, 2, (4, 6)).astype(np.int64)} for _ in range(3)]
    model = onnxpress.compile(proto, "quantize", calibration=data)
    out = onnxpress.to_proto(model)
    quantized = {n.input[0] for n in out.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in quantized
    assert not quantized & {"mf", "inv", "bias"}


def test_a_quantize_that_changes_nothing_says_why(caplog) -> None:
    """The Conv network inside both branches of an If: quantize does not visit bodies, so
    it warns, naming them, and the report counts the nodes it did not visit."""
    body_proto = _bytes_cnn(TensorProto.FLOAT)
    inner = body_proto.graph

    def branch(name: str) -> onnx.GraphProto:
        nodes = [helper.make_node(n.op_type, n.input, [f"{name}_{o}" if o != "y" else
                                                        f"{name}_y" for o in n.output],
                                  **{a.name: helper.get_attribute_value(a) for a in n.attribute})
                 for n in inner.node]
        renamed = {o.removeprefix(f"{name}_"): o for n in nodes for o in n.output}
        for node in nodes:
            node.input[:] = [renamed.get(i, i) for i in node.input]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_y", TensorProto.FLOAT, None)])

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("then"),
                          else_branch=branch("else"))],
        "gated", [helper.make_tensor_value_info("bytes", TensorProto.FLOAT, ["n", 8, 8, 3]),
                  helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inner.initializer))
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    data = CalibrationData([{"bytes": rng.random((2, 8, 8, 3)).astype(np.float32),
                             "flag": np.array(True)}])
    with caplog.at_level("WARNING"):
        _, report = onnxpress.compile(proto, "quantize", calibration=data, return_report=True)
    notes = report.passes[0].notes
    assert "warning: nothing quantized: the 4 Conv/Gemm/MatMul nodes sit inside If/Loop/Scan "\
           "bodies, which quantize does not visit" in notes[0].replace("Attention/", "")
    assert "quantize: 16 nodes inside If/Loop/Scan bodies were not visited" in notes
    assert "nothing quantized" in caplog.text
