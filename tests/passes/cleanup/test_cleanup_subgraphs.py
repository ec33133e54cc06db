"""Cleanup inside If branches: each pass either rewrites a body fully or leaves it alone,
and the model still computes the same thing on both branches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import EXACT, check_pass

import onnxpress


def _branch(name: str, scale: float) -> onnx.GraphProto:
    rng = np.random.default_rng(len(name))
    consts = {
        f"{name}_a": np.full(4, scale, np.float32),
        f"{name}_b": np.full(4, 2.0, np.float32),
        f"{name}_w": rng.standard_normal((4, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Identity", ["x"], [f"{name}_x"]),
        helper.make_node("Mul", [f"{name}_a", f"{name}_b"], [f"{name}_ab"]),  # constant
        helper.make_node("MatMul", [f"{name}_x", f"{name}_w"], [f"{name}_mm"]),
        helper.make_node("Add", [f"{name}_mm", f"{name}_ab"], [f"{name}_sum"]),
        helper.make_node("Relu", [f"{name}_sum"], [f"{name}_r1"]),
        helper.make_node("Relu", [f"{name}_sum"], [f"{name}_r2"]),  # duplicate for cse
        helper.make_node("Add", [f"{name}_r1", f"{name}_r2"], [f"{name}_out"]),
    ]
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])


def _model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", 1.5),
                          else_branch=_branch("else", -0.5))],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, cond: bool, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"cond": np.array(cond), "x": x})[0]


@pytest.mark.parametrize("pipeline", ["cleanup", "dce", "cse", "fold-constants",
                                      "eliminate-identity", "fuse-shape-ops", "fold-batchnorm"])
def test_if_branches_keep_their_meaning(pipeline: str) -> None:
    original = _model()
    model = onnxpress.compile(onnxpress.load(original), pipeline)
    onnxpress.ir.verify(model)
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for cond in (True, False):
        np.testing.assert_array_equal(_run(proto, cond, x), _run(original, cond, x))


def test_cleanup_simplifies_inside_branches() -> None:
    model = onnxpress.compile(onnxpress.load(_model()), "cleanup")
    (if_node,) = list(model.graph)
    for branch in ("then_branch", "else_branch"):
        ops = [n.op_type for n in if_node.attributes[branch].as_graph()]
        assert sorted(ops) == ["Add", "Add", "MatMul", "Relu"], ops  # no Identity/Mul/2nd Relu


def _nested_model() -> onnx.ModelProto:
    """An If on an input whose then-branch holds an If on a constant condition; the weight
    ``w`` (a then-branch initializer) is read only inside the inner else-branch, which
    folding the inner If discards (as silero-vad's sample-rate branches do)."""
    out = helper.make_tensor_value_info

    def inner(name: str, nodes: list) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [out(f"{name}_y", TensorProto.FLOAT, [2, 4])])

    then = helper.make_graph(
        [helper.make_node("Constant", [], ["always"], value=helper.make_tensor(
            "always", TensorProto.BOOL, [], [True])),
         helper.make_node("If", ["always"], ["then_y"],
                          then_branch=inner("in_then", [helper.make_node("Relu", ["x"],
                                                                         ["in_then_y"])]),
                          else_branch=inner("in_else", [helper.make_node("Add", ["x", "w"],
                                                                         ["in_else_y"])]))],
        "then", [], [out("then_y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((2, 4), np.float32), "w")])
    other = inner("else", [helper.make_node("Neg", ["x"], ["else_y"])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "g",
        [out("cond", TensorProto.BOOL, []), out("x", TensorProto.FLOAT, [2, 4])],
        [out("y", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_initializers_a_folded_body_read_go_with_it() -> None:
    """The inner If folds to its then-branch; ``w`` was read only by the discarded branch
    and must not stay behind in the outer branch (onnx_ir's own sweep looks at the main
    graph only, and the discarded body still holds its uses)."""
    source = _nested_model()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        checked = check_pass("cleanup", source, feeds, tolerance=EXACT, counts={"If": 1})
    (then,) = [g for g in checked.proto.graph.node[0].attribute if g.name == "then_branch"]
    assert [i.name for i in then.g.initializer] == []
    assert checked.stats("cleanup")["dce.initializers_removed"] >= 1
