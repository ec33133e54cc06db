"""verify() finds broken invariants; the builder and analyses behave."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir
import pytest
from onnx import TensorProto, helper

import onnxpress
from onnxpress.ir import Builder, VerificationError, constant_array, to_networkx, verify


def _model():
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [helper.make_tensor("c", TensorProto.FLOAT, [3], [1, 2, 3])])
    return onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_valid_model_verifies() -> None:
    verify(_model())


def test_out_of_order_nodes_are_found() -> None:
    model = _model()
    relu = model.graph.node(1)
    model.graph.remove(relu)
    model.graph.insert_before(model.graph.node(0), relu)
    with pytest.raises(VerificationError, match="used before it is defined"):
        verify(model)


def test_missing_opset_and_unknown_op_are_found() -> None:
    model = _model()
    model.graph.node(1).op_type = "NoSuchOp"
    with pytest.raises(VerificationError, match="NoSuchOp does not exist at opset 17"):
        verify(model)
    model = _model()
    model.graph.node(1).domain = "com.example"
    with pytest.raises(VerificationError, match="not in the model's opset imports"):
        verify(model)


def test_initializer_shape_mismatch_is_found() -> None:
    model = _model()
    model.graph.initializers["c"].shape = onnx_ir.Shape([4])
    with pytest.raises(VerificationError, match="initializer 'c' has shape"):
        verify(model)


def test_builder_inserts_before_anchor_and_analyses() -> None:
    model = _model()
    graph = model.graph
    relu = graph.node(1)
    builder = Builder(graph)
    two = builder.initializer(np.full(3, 2, np.float32), "c")  # name taken -> c_1
    doubled = builder.op("Mul", [relu.inputs[0], two])
    builder.insert_before(relu)
    relu.replace_input_with(0, doubled)
    verify(model)
    assert two.name == "c_1"
    assert constant_array(two).tolist() == [2, 2, 2]
    view = to_networkx(graph)
    assert [view.nodes[n]["op_type"] for n in view.nodes] == ["Add", "Mul", "Relu"]
    assert view.number_of_edges() == 2
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)


def test_duplicate_graph_outputs_are_found() -> None:
    model = _model()
    model.graph.outputs.append(model.graph.outputs[0])
    with pytest.raises(VerificationError, match="listed twice"):
        verify(model)
