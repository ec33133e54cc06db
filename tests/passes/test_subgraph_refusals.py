"""A refusal says what would work: a pass that does not visit If/Loop/Scan bodies and finds
nothing in the main graph says where the layers are (silero-vad: 12 Conv inside If
branches), instead of "no Conv"; prune on an export without shapes says to clean up."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.errors import BadInputError


def _conv_in_branches() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def branch(name: str) -> onnx.GraphProto:
        weight = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                                         f"{name}_w")
        return helper.make_graph(
            [helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"])], name, [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)], [weight])

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("then"),
                          else_branch=branch("else"))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])])
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("passes", ["prune(ratio=0.3)", "lowrank(ratio=0.5)"])
def test_layers_inside_bodies_are_named_in_the_refusal(passes: str) -> None:
    with pytest.raises(BadInputError, match=r"the main graph has no .*; 2 Conv sit inside "
                                            r"If/Loop/Scan bodies, which \w+ does not visit"):
        onnxpress.compile(_conv_in_branches(), passes)


def test_prune_before_cleanup_on_an_untyped_export_says_to_clean_up() -> None:
    """Paddle's exports carry no intermediate shapes: prune met 'unknown rank' at the
    first BatchNorm and refused without saying what would work."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
            for n, s in (("w", (8, 3, 3, 3)), ("w2", (4, 8, 1, 1)), ("scale", (8,)),
                         ("bias", (8,)), ("mean", (8,)))]
    init.append(numpy_helper.from_array(np.ones(8, np.float32), "var"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]),
         helper.make_node("Relu", ["b"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], init)
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BadInputError, match=r"run cleanup first .* --passes 'cleanup,prune"):
        onnxpress.compile(proto, "prune(ratio=0.5,multiple=1)")
    pruned = onnxpress.compile(proto, "cleanup,prune(ratio=0.5,multiple=1)")
    assert [n for n in pruned.graph if n.op_type == "Conv"][0].inputs[1].shape[0] < 8
