"""The attention-mask prover (ir/attention/mask_probe.py, reached through ``trace_mask``):
spellings of ``c * (1 - m)[:, None, None, :]`` other than the classic one are accepted
with their fill; masks that compute something else (causal, another fill, inverted, reading
another input's values, an infinite fill) are refused, and so is a subgraph that would compute
a huge value to find out."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.ir.attention.mask import MaskSource, trace_mask
from onnxpress.ir.attention.values import dims

FILL = float(np.finfo(np.float32).min)


def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(
        array), name))


def mask_graph(body, extra_inputs=()):
    """``body``: nodes from ``mb`` (the bool mask), ``B`` and ``S`` (1-D int64 sizes) to
    ``out``. Inputs ``m`` [batch, sequence] int64 and ``x`` [batch, sequence, 8]."""
    head = [
        helper.make_node("Cast", ["m"], ["mb"], to=TensorProto.BOOL),
        helper.make_node("Shape", ["m"], ["B"], start=0, end=1),
        helper.make_node("Shape", ["m"], ["S"], start=1, end=2),
    ]
    inputs = [helper.make_tensor_value_info("m", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8]),
              *extra_inputs]
    graph = helper.make_graph(head + body, "mask", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = onnxpress.load(proto)
    x = next(v for v in model.graph.inputs if v.name == "x")
    return model.graph.outputs[0], dims(x)


def where(condition, kept=0.0, masked=FILL):
    return [const("kept", np.float32(kept)), const("fill", np.float32(masked)),
            helper.make_node("Where", [condition, "kept", "fill"], ["out"])]


def unsqueezed():
    return [const("axes", np.array([1, 2], np.int64)),
            helper.make_node("Unsqueeze", ["mb", "axes"], ["m4"])]


def transformers5():
    """transformers 5's spelling: a Gather of the flattened mask at ``b * S + k`` over
    Ranges, And-ed with an always-true query condition, expanded to [B, 1, S, S]."""
    scalar = [const("zero", np.int64(0)), const("one", np.int64(1)),
              const("a0", np.array([0], np.int64)), const("a123", np.array([1, 2, 3], np.int64)),
              const("a012", np.array([0, 1, 2], np.int64)), const("a013", np.array([0, 1, 3],
                                                                               np.int64)),
              const("flat_shape", np.array([-1], np.int64)), const("ones", np.array([1],
                                                                                  np.int64))]
    return scalar + [
        helper.make_node("Squeeze", ["B", "a0"], ["b"]),
        helper.make_node("Squeeze", ["S", "a0"], ["s"]),
        helper.make_node("Range", ["zero", "b", "one"], ["rb"]),
        helper.make_node("Range", ["zero", "s", "one"], ["rk"]),
        helper.make_node("Unsqueeze", ["rb", "a123"], ["b4"]),  # [B, 1, 1, 1]
        helper.make_node("Unsqueeze", ["rk", "a012"], ["k4"]),  # [1, 1, 1, S]
        helper.make_node("Unsqueeze", ["rk", "a013"], ["q4"]),  # [1, 1, S, 1]
        helper.make_node("GreaterOrEqual", ["q4", "zero"], ["any_q"]),
        helper.make_node("Mul", ["b4", "s"], ["row"]),
        helper.make_node("Add", ["row", "k4"], ["index"]),
        helper.make_node("Flatten", ["mb"], ["flat2"], axis=2),
        helper.make_node("Reshape", ["flat2", "flat_shape"], ["flat"]),
        helper.make_node("Gather", ["flat", "index"], ["picked"], axis=0),  # [B, 1, 1, S]
        helper.make_node("And", ["any_q", "picked"], ["both"]),  # [B, 1, S, S]
        helper.make_node("Concat", ["B", "ones", "S", "S"], ["full"], axis=0),
        helper.make_node("Expand", ["both", "full"], ["cond"]),
    ] + where("cond")


def test_transformers5_mask_is_recognised_with_its_fill():
    value, x_dims = mask_graph(transformers5())
    found = trace_mask(value, x_dims)
    assert isinstance(found, MaskSource), found
    assert found.source.name == "m" and found.fill == FILL


def test_a_where_over_the_unsqueezed_mask_is_recognised():
    value, x_dims = mask_graph(unsqueezed() + where("m4", masked=-1e4))
    found = trace_mask(value, x_dims)
    assert isinstance(found, MaskSource) and found.fill == np.float32(-1e4)


def causal():
    """The padding mask And-ed with k <= q: not a key mask."""
    nodes = transformers5()
    return [n for n in nodes if n.output[0] != "any_q"] + [
        helper.make_node("LessOrEqual", ["k4", "q4"], ["any_q"])]


def huge():
    """The mask plus the maximum of zeros expanded to [20000, 20000]: the same value, but
    one probe would compute 400 million elements (1.6 GB)."""
    return unsqueezed() + where("m4")[:2] + [
        helper.make_node("Where", ["m4", "kept", "fill"], ["w"]),
        const("zeros", np.zeros([1], np.float32)),
        const("big", np.array([20000, 20000], np.int64)),
        helper.make_node("Expand", ["zeros", "big"], ["huge"]),
        helper.make_node("ReduceMax", ["huge"], ["zero"], keepdims=0),
        helper.make_node("Add", ["w", "zero"], ["out"])]


@pytest.mark.parametrize(("body", "reason"), [
    (causal, "differs from c * (1 - m)"),
    (huge, "is not run: Expand would compute 400000000 elements"),
    (lambda: unsqueezed() + where("m4", kept=1.0), "differs from c * (1 - m)"),  # wrong fill
    (lambda: unsqueezed() + where("m4", kept=FILL, masked=0.0), "differs from c * (1 - m)"),
    (lambda: unsqueezed() + where("m4", masked=-np.inf), "not finite and non-zero"),
    (lambda: [const("axes", np.array([1, 2], np.int64)),  # not m[:, None, None, :]
              helper.make_node("Unsqueeze", ["mb", "axes"], ["m4"])] + where("m4")[:2] + [
        helper.make_node("Transpose", ["m4"], ["t4"], perm=[0, 1, 3, 2]),
        helper.make_node("Where", ["t4", "kept", "fill"], ["out"])], "is not [B, 1, 1 | S, S]"),
])
def test_other_masks_are_refused(body, reason):
    value, x_dims = mask_graph(body())
    found = trace_mask(value, x_dims)
    assert isinstance(found, str) and reason in found, found


def test_a_mask_reading_another_input_is_refused():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])
    body = [helper.make_node("Cast", ["ids"], ["idb"], to=TensorProto.BOOL),
            helper.make_node("And", ["mb", "idb"], ["both"]),
            const("axes", np.array([1, 2], np.int64)),
            helper.make_node("Unsqueeze", ["both", "axes"], ["m4"])] + where("m4")
    value, x_dims = mask_graph(body, [ids])
    found = trace_mask(value, x_dims)
    assert isinstance(found, str) and "depends on other inputs' values" in found, found


def test_a_mask_of_other_tokens_is_refused():
    value, _ = mask_graph(transformers5())
    found = trace_mask(value, (onnxpress.ir.SymbolicDim("batch"), onnxpress.ir.SymbolicDim("n")))
    assert isinstance(found, str) and "not provably the attention input's" in found, found
