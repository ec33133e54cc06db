"""Bias correction: the shift ``(W_q - W) mean(x)`` per output channel, checked against
``onnx.reference`` running the layer with weight ``W_q - W`` on an input equal to its
mean everywhere; and ``quantize(bias_correction=true)`` writing ``b - shift``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxpress
from onnxpress.passes.quantize.static.bias_correction import ChannelMean, bias_site, output_shift
from onnxpress.passes.quantize.static.policy import plan
from onnxpress.passes.quantize.static.quantize import Quantize
from onnxpress.passes.quantize.static.rewrite import weight_round_trip

rng = np.random.default_rng(0)

#: op -> (input shape, weight shape, attributes); Gemm with transB: weight [N, K], axis 0
CASES = {
    "conv": ("Conv", (1, 6, 5, 5), (4, 3, 3, 3), {"group": 2}),
    "depthwise": ("Conv", (1, 4, 4, 4), (4, 1, 3, 3), {"group": 4}),
    "gemm": ("Gemm", (1, 8), (5, 8), {"transB": 1}),
    "gemm_kn": ("Gemm", (1, 8), (8, 5), {}),
    "matmul": ("MatMul", (1, 3, 8), (8, 5), {}),
}


def _model(op: str, x_shape, w_shape, attrs, weight: np.ndarray) -> onnx.ModelProto:
    out_channels = w_shape[0] if op == "Conv" or attrs.get("transB") else w_shape[1]
    bias = numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b")
    inputs = ["x", "w", "b"] if op != "MatMul" else ["x", "w"]
    nodes = [helper.make_node(op, inputs, ["y" if op != "MatMul" else "m"], **attrs)]
    if op == "MatMul":  # Linear as exporters write it: MatMul + Add(bias)
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_shift_equals_the_layer_run_on_the_mean(case):
    op, x_shape, w_shape, attrs = CASES[case]
    weight = rng.standard_normal(w_shape).astype(np.float32)
    model = onnxpress.load(_model(op, x_shape, w_shape, attrs, weight))
    (target,) = plan(model.graph, ops=[op]).targets
    assert bias_site(target) is not None
    axis = 1 if op in ("Conv", "Gemm") else -1
    channels = x_shape[axis]
    mean = rng.standard_normal(channels)
    observer = ChannelMean(axis)
    for noise in (-1.0, 1.0):  # two batches whose average is ``mean``
        shape = [1] * len(x_shape)
        shape[axis] = channels
        observer(np.broadcast_to(mean.reshape(shape) + noise, x_shape).astype(np.float32))
    np.testing.assert_allclose(observer.mean, mean, rtol=1e-6, atol=1e-6)

    error = weight_round_trip(weight, target.axis)[0] - weight
    got = output_shift(error, target, observer.mean)

    shape = [1] * len(x_shape)
    shape[axis] = channels
    constant = np.broadcast_to(mean.reshape(shape), x_shape).astype(np.float32)
    proto = _model(op, x_shape, w_shape, attrs, error)
    for init in proto.graph.initializer:  # no bias: the layer's output is the shift alone
        if init.name == "b":
            init.CopyFrom(numpy_helper.from_array(np.zeros(len(got), np.float32), "b"))
    (want,) = ReferenceEvaluator(proto).run(None, {"x": constant})
    want = np.moveaxis(want, 1 if op == "Conv" else -1, -1).reshape(-1, len(got))
    assert np.abs(got).max() > 0
    for row in want:  # every position (no padding) and every token sees the same shift
        np.testing.assert_allclose(row, got, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", ["conv", "matmul"])
def test_quantize_subtracts_the_shift_from_the_bias(case):
    op, x_shape, w_shape, attrs = CASES[case]
    weight = rng.standard_normal(w_shape).astype(np.float32)
    proto = _model(op, x_shape, w_shape, attrs, weight)
    bias = numpy_helper.to_array(proto.graph.initializer[1])
    data = [{"x": rng.standard_normal(x_shape).astype(np.float32) + 2.0} for _ in range(4)]
    corrected = onnxpress.load(proto)
    result = Quantize(bias_correction=True, grouped=True, data=data)(corrected)
    assert result.stats["biases_corrected"] == 1
    plain = onnxpress.load(proto)
    Quantize(bias_correction=False, grouped=True, data=data)(plain)
    axis = 1 if op == "Conv" else -1
    mean = np.mean([np.moveaxis(b["x"], axis, -1).reshape(-1, x_shape[axis]) for b in data],
                   axis=(0, 1))
    error = weight_round_trip(weight, 0 if op == "Conv" else 1)[0] - weight
    model = onnxpress.load(proto)
    (target,) = plan(model.graph, ops=[op]).targets
    shift = output_shift(error, target, mean)

    def float_bias(m) -> np.ndarray:
        values = {v.name: v for v in m.graph.initializers.values()}
        if op == "Conv":  # int32 bias at s_x * s_w
            q = values["b_corrected_quantized" if "b_corrected_quantized" in values
                       else "b_quantized"].const_value.numpy()
            s = values["b_corrected_scale" if "b_corrected_scale" in values
                       else "b_scale"].const_value.numpy()
            return q * s
        return values["b_corrected" if "b_corrected" in values else "b"].const_value.numpy()

    np.testing.assert_allclose(float_bias(plain), bias, atol=1e-3)
    np.testing.assert_allclose(float_bias(corrected), bias - shift, atol=1e-3)
