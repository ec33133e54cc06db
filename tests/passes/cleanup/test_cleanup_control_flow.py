"""The cleanup failures reported on onnx 1.23 / onnx-ir 1.1 / onnxscript 0.7 / onnxruntime
1.32 (issue 21): a Loop, a Slice with default axes, a foldable SplitToSequence (an If with
typed branch outputs is test_cleanup_subgraphs'). Each compiles, stays valid and computes
the same, on the versions a fresh install gets and on the lowest ones (.ci/lowest_versions).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION, run_ort

import onnxpress

PIPELINES = ["cleanup", "fold-constants", "fuse-shape-ops", "cse", "dce"]


def _model(nodes: list, inputs: list, outputs: list, init: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, init)
    model = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _loop() -> onnx.ModelProto:
    """y = x + 3 * (w @ 1-ish) by a Loop of 3 trips adding a constant computed in the body."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["two", "half"], ["one"]),  # foldable inside the body
         helper.make_node("Add", ["acc_in", "one"], ["sum"]),
         helper.make_node("Identity", ["sum"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    return _model(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array(3, np.int64), "trips")])


def _slice_default_axes() -> onnx.ModelProto:
    """Slice with starts/ends only (axes and steps omitted), after a shape chain."""
    return _model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
         helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
         helper.make_node("Reshape", ["x", "target"], ["r"]),
         helper.make_node("Slice", ["r", "start", "end"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array([0], np.int64), "zero"),
         numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
         numpy_helper.from_array(np.array([0, 2], np.int64), "start"),
         numpy_helper.from_array(np.array([1, 10], np.int64), "end")])


def _split_to_sequence() -> onnx.ModelProto:
    """A constant split into a sequence and read back (foldable in principle)."""
    return _model(
        [helper.make_node("SplitToSequence", ["table"], ["seq"], axis=0),
         helper.make_node("SequenceAt", ["seq", "index"], ["row"]),
         helper.make_node("Add", ["x", "row"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "table"),
         numpy_helper.from_array(np.array(1, np.int64), "index")])


CASES = {
    "loop": (_loop, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}),
    "slice_default_axes": (_slice_default_axes,
                           {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}),
    "split_to_sequence": (_split_to_sequence, {"x": np.ones((1, 4), np.float32)}),
}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(CASES))
def test_control_flow_and_defaults_compile_and_compute_the_same(case: str,
                                                                pipeline: str) -> None:
    make, feeds = CASES[case]
    proto = make()
    out = onnxpress.to_proto(onnxpress.compile(proto, pipeline))
    onnx.checker.check_model(out, full_check=True)
    want, got = run_ort(proto, feeds), run_ort(out, feeds)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)

