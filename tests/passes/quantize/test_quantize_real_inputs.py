"""quantize on inputs as exporters leave them: integer image bytes read by a Conv network are
data (quantized), a mask stays an index path, and a quantize that changes nothing says why
(weights inside If bodies)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION, run_ort

import onnxpress


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


def _gated_cnn() -> onnx.ModelProto:
    """The bytes CNN (on float input) inside both branches of an If on a flag input,
    silero-VAD's shape (a branch per sample rate), with its own weights in each branch."""
    inner = _bytes_cnn(TensorProto.FLOAT).graph

    def branch(name: str, scale: float) -> onnx.GraphProto:
        rename = {o: f"{name}_{o}" for n in inner.node for o in n.output}
        arrays = {t.name: numpy_helper.to_array(t) for t in inner.initializer}
        weights = [numpy_helper.from_array(a * np.asarray(scale, a.dtype) if a.dtype ==
                                           np.float32 else a, f"{name}_{n}")
                   for n, a in arrays.items()]
        rename.update({t.name: f"{name}_{t.name}" for t in inner.initializer})
        nodes = [helper.make_node(n.op_type, [rename.get(i, i) for i in n.input],
                                  [rename[o] for o in n.output],
                                  **{a.name: helper.get_attribute_value(a) for a in n.attribute})
                 for n in inner.node]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_y", TensorProto.FLOAT, None)], weights)

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("then", 1.0),
                          else_branch=branch("else", 0.5))],
        "gated", [helper.make_tensor_value_info("bytes", TensorProto.FLOAT, ["n", 8, 8, 3]),
                  helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])


def _gated_batches(flags: list[bool]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"bytes": (rng.random((4, 8, 8, 3)) * 255).astype(np.float32),
             "flag": np.array(flag)} for flag in flags]


def test_layers_inside_if_branches_are_quantized_where_the_data_goes() -> None:
    """Before: weights inside If branches were never seen, int8 quantized nothing and
    said nothing. Now the branch the calibration data takes is quantized (its values
    observed on a copy with that branch inlined); the branch it never took stays exactly
    float, with a note; with data for both, both are quantized."""
    proto = _gated_cnn()
    model, report = onnxpress.compile(proto, "quantize", calibration=_gated_batches([True]),
                                      return_report=True)
    stats, notes = report.passes[0].stats, report.passes[0].notes
    assert stats["nodes"] == 2 and stats["weights"] == 2, stats
    assert any("inside If branches the calibration data never took" in n for n in notes)
    out = onnxpress.to_proto(model)
    (then_feed,), (else_feed,) = _gated_batches([True]), _gated_batches([False])
    want, got = run_ort(proto, then_feed)["y"], run_ort(out, then_feed)["y"]
    cosine = float((want * got).sum() / np.linalg.norm(want) / np.linalg.norm(got))
    assert 0.99 < cosine < 1.0
    np.testing.assert_array_equal(run_ort(out, else_feed)["y"], run_ort(proto, else_feed)["y"])
    both = onnxpress.compile(proto, "quantize", calibration=_gated_batches([True, False]))
    assert not run_ort(onnxpress.to_proto(both), else_feed)["y"].tolist() == \
        run_ort(proto, else_feed)["y"].tolist()
    kinds = collections.Counter(n.op_type for n in both.graph.all_nodes())
    assert kinds["DequantizeLinear"] >= 8 and kinds["Conv"] == 2


def test_a_quantize_that_changes_nothing_says_why(caplog) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": np.ones((2, 4), np.float32)}]
    with caplog.at_level("WARNING"):
        _, report = onnxpress.compile(proto, "quantize", calibration=data, return_report=True)
    (warning,) = [n for n in report.passes[0].notes if n.startswith("warning:")]
    assert warning.startswith("warning: nothing quantized: the main graph has no ")
    assert "nothing quantized" in caplog.text


def test_grouped_convolutions_stay_float_by_the_cost_rule() -> None:
    """ONNX Runtime's int8 depthwise kernels ran 0.4x-0.5x fp32 on a 2-core Xeon (VNNI): a
    depthwise Conv stays float, the report says so, and the pointwise Conv beside it is
    quantized; quantize(grouped=true) (TensorRT's preset) quantizes both."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
            for n, s in (("dw", (8, 1, 3, 3)), ("pw", (16, 8, 1, 1)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "dw"], ["d"], group=8, pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["d"], ["r"]),
         helper.make_node("Conv", ["r", "pw"], ["y"])],
        "mobile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 6, 6])], init)
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": rng.standard_normal((2, 8, 6, 6)).astype(np.float32)} for _ in range(3)]
    _, report = onnxpress.compile(proto, "quantize", calibration=data, return_report=True)
    assert report.passes[0].stats["nodes"] == 1
    assert any(n.startswith("int8 cost rule: 1 grouped/depthwise Conv left in float")
               for n in report.passes[0].notes)
    _, both = onnxpress.compile(proto, "quantize(grouped=true)", calibration=data,
                                return_report=True)
    assert both.passes[0].stats["nodes"] == 2


def test_the_int8_preset_keeps_what_does_not_pay_in_float() -> None:
    """The ort-cpu int8 preset's cost rule (benchmarks/suites/int8_cost.py): a lone small
    Conv stays float (entering and leaving int8 costs more than it saves) and so does a
    MatMul with one row per sample (a vector product at batch 1), each counted in the report
    with the option that quantizes it; a MatMul over a sequence is quantized. The options,
    given to the preset, take the rule back."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, n)
            for n, s in (("c", (8, 3, 3, 3)), ("seq", (48, 32)), ("head", (32, 10)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "c"], ["f"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["f"], ["r"]),
         helper.make_node("Reshape", ["r", "to_seq"], ["s"]),  # [n, 8, 48]: 8 rows a sample
         helper.make_node("MatMul", ["s", "seq"], ["h"]),
         helper.make_node("ReduceMean", ["h"], ["p"], axes=[1], keepdims=0),  # [n, 32]
         helper.make_node("MatMul", ["p", "head"], ["y"])],
        "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [*init, numpy_helper.from_array(np.array([0, 8, 48], np.int64), "to_seq")])
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    data = [{"x": rng.standard_normal((2, 3, 4, 12)).astype(np.float32)} for _ in range(3)]
    model, report = onnxpress.compile(proto, "int8(min_rows=4)", calibration=data,
                                      return_report=True)
    stats = report.passes[2].stats
    notes = report.passes[2].notes
    assert report.passes[2].name == "quantize" and stats["nodes"] == 1, stats
    assert stats["kept_float"] == 2, stats  # the Conv and the head
    assert any(n.startswith("int8 cost rule: 1 Conv in 1 groups left in float")
               for n in notes), notes
    assert any(n.startswith("int8 cost rule: 1 MatMul/Gemm with under 4 rows per sample")
               for n in notes), notes
    ops = collections.Counter(n.op_type for n in onnxpress.to_proto(model).graph.node)
    # one quantized activation (the sequence MatMul's input), whichever form lower-qdq chose
    assert ops["Conv"] == 1 and ops["QuantizeLinear"] == 1, ops
    _, everything = onnxpress.compile(proto, "int8(cost=false,min_rows=0)", calibration=data,
                                      return_report=True)
    assert everything.passes[2].stats["nodes"] == 3


def _conv_chain(depth: int, channels: int, size: int, batch: str | int = "n"
                ) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(rng.standard_normal(
            (channels, channels, 3, 3)).astype(np.float32) * 0.1, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes.append(helper.make_node("ReduceMean", [x], ["y"], axes=[2, 3], keepdims=0))
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels])], inits)
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])


def test_a_chain_of_convolutions_pays_for_its_edges_and_a_lone_one_does_not() -> None:
    """Four chained 3x3 Convs at 56x56 (int8 measured 1.56x fp32) are quantized by the
    preset; one of them alone (0.59x) is not: only the edges differ, the Q where int8 begins
    and the DQ where it ends. A batch axis an exporter wrote as -1 (Paddle) counts as one
    sample, not as a negative size."""
    def planned(depth: int, batch: str | int = "n") -> int:
        proto = _conv_chain(depth, 32, 56, batch)
        data = [{"x": np.random.default_rng(i).random((1, 32, 56, 56), np.float32)}
                for i in range(2)]
        _, report = onnxpress.compile(proto, "int8", calibration=data, return_report=True)
        quantize = next(p for p in report.passes if p.name == "quantize")
        return quantize.stats["nodes"]

    assert planned(4) == 4
    assert planned(1) == 0
    assert planned(1, batch=-1) == 0
