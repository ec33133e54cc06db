"""quant_math: QuantizeLinear/DequantizeLinear twins bit-identical to onnx.reference and ONNX
Runtime; scale/zero-point choices; int32 biases."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxpress.ir.quant_math import (
    MIN_SCALE,
    QuantParams,
    dequantize,
    int32_bias,
    params_from_range,
    quantize,
    weight_params,
)

_ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int32): TensorProto.INT32}


def _qdq_model(shape: tuple[int, ...], p: QuantParams) -> onnx.ModelProto:
    """x -> QuantizeLinear -> q (output) -> DequantizeLinear -> y (output); the parameters
    are initializers."""
    attrs = {} if p.axis is None else {"axis": p.axis}
    qtype = _ONNX_TYPE[p.zero_point.dtype]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("q", qtype, shape),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [onnx.numpy_helper.from_array(np.asarray(p.scale, np.float32), "s"),
         onnx.numpy_helper.from_array(np.asarray(p.zero_point), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _runtimes(model: onnx.ModelProto, x: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    reference = ReferenceEvaluator(model).run(None, {"x": x})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return [("reference", *reference), ("onnxruntime", *session.run(None, {"x": x}))]


def _hard_data(rng: np.random.Generator, shape: tuple[int, ...], p: QuantParams) -> np.ndarray:
    """Random values spread past the representable range, a third of them exact ties
    (x / scale = k + 0.5), some exact zeros."""
    scale = np.asarray(p.scale, np.float32)
    if p.axis is not None:
        bshape = [1] * len(shape)
        bshape[p.axis] = scale.size
        scale = scale.reshape(bshape)
    steps = rng.integers(-400, 400, size=shape).astype(np.float32)
    ties = (steps + np.float32(0.5)) * scale
    noise = rng.uniform(-400, 400, size=shape).astype(np.float32) * scale
    choice = rng.integers(0, 3, size=shape)
    x = np.where(choice == 0, ties, noise).astype(np.float32)
    x[rng.random(shape) < 0.05] = 0.0
    # far out of range: saturation (onnx.reference casts x / scale to int32 before it
    # saturates, so beyond 2**31 steps only ONNX Runtime is a valid reference)
    x.flat[:4] = [1e6, -1e6, 3e4, -3e4]
    return x


def _params(rng: np.random.Generator, dtype: str, channels: int | None, axis: int | None):
    size = () if channels is None else (channels,)
    # power-of-two and arbitrary scales: ties are exact for the former, rounded for the latter
    scale = np.where(rng.random(size) < 0.5, 2.0 ** rng.integers(-8, 0, size=size),
                     rng.uniform(0.001, 0.1, size=size)).astype(np.float32)
    info = np.iinfo(dtype)
    zero = rng.integers(info.min, info.max + 1, size=size).astype(dtype)
    return QuantParams(np.asarray(scale), np.asarray(zero), axis)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_quantize_dequantize_bit_identical_to_reference_and_ort(dtype: str, axis: int | None):
    rng = np.random.default_rng(hash((dtype, axis)) % 2**32)
    shape = (6, 5, 37)
    p = _params(rng, dtype, None if axis is None else shape[axis], axis)
    x = _hard_data(rng, shape, p)
    ours_q = quantize(x, p)
    ours_y = dequantize(ours_q, p)
    assert ours_q.dtype == np.dtype(dtype) and ours_y.dtype == np.float32
    for name, q, y in _runtimes(_qdq_model(shape, p), x):
        np.testing.assert_array_equal(ours_q, q, err_msg=name)
        assert ours_y.tobytes() == y.tobytes(), name


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # onnx.reference's int32 cast overflows
def test_ties_round_half_to_even_and_saturate_like_ort():
    p = QuantParams(np.asarray(0.5, np.float32), np.asarray(10, np.uint8))
    x = np.array([0.25, 0.75, -0.25, -0.75, 1.25, 1000.0, -1000.0, 3e38, -3e38, np.inf, -np.inf],
                 np.float32)
    expected = [10, 12, 10, 8, 12, 255, 0, 255, 0, 255, 0]
    np.testing.assert_array_equal(quantize(x, p), expected)
    (_, q, y) = _runtimes(_qdq_model(x.shape, p), x)[1]
    np.testing.assert_array_equal(q, expected)
    assert dequantize(quantize(x, p), p).tobytes() == y.tobytes()


def test_int32_dequantize_matches_ort():
    q = np.array([2**31 - 1, -(2**31), 123456789, -7, 0], np.int32)
    p = QuantParams(np.asarray(3e-7, np.float32), np.asarray(0, np.int32))
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])], "dq",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        [onnx.numpy_helper.from_array(p.scale, "s"),
         onnx.numpy_helper.from_array(p.zero_point, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    (y,) = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": q})
    assert dequantize(q, p).tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("lo, hi", [(-1.0, 3.0), (0.5, 2.0), (-4.0, -0.1), (-0.3, 0.3), (0, 7e-3)])
def test_zero_is_exact_and_range_covered(dtype: str, symmetric: bool, lo: float, hi: float):
    p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric)
    assert p.scale.dtype == np.float32 and p.zero_point.dtype == np.dtype(dtype)
    assert p.scale.shape == p.zero_point.shape == ()
    assert dequantize(quantize(np.float32(0.0), p), p) == 0.0
    ends = np.array([min(lo, 0.0), max(hi, 0.0)], np.float32)
    error = np.abs(dequantize(quantize(ends, p), p) - ends)
    assert np.all(error <= _half_step(p, ends))


def test_symmetric_int8_is_restricted_with_zero_point_zero():
    p = params_from_range(-2.0, 5.0, dtype="int8", symmetric=True)
    assert p.zero_point == 0
    np.testing.assert_allclose(p.scale, 5.0 / 127, rtol=1e-7)
    q = quantize(np.array([-5.0, 5.0, -2.0], np.float32), p)
    np.testing.assert_array_equal(q, [-127, 127, -51])
    u = params_from_range(-2.0, 5.0, dtype="uint8", symmetric=True)
    assert u.zero_point == 128 and u.scale == p.scale


def test_per_channel_params_and_weight_params():
    w = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 1.0, -0.5]], np.float32)
    p = weight_params(w, axis=-2)
    assert p.axis == 0 and p.scale.shape == p.zero_point.shape == (3,)
    np.testing.assert_allclose(p.scale, [2.0 / 127, MIN_SCALE, 3.0 / 127], rtol=1e-7)
    np.testing.assert_array_equal(p.zero_point, 0)
    q = quantize(w, p)
    assert q.min() >= -127 and q[0, 1] == -127 and q[2, 0] == 127
    assert np.all(q[1] == 0)
    np.testing.assert_allclose(dequantize(q, p), w, atol=3.0 / 127 / 2)
    pt = weight_params(w, axis=None, dtype="uint8", symmetric=False)
    assert pt.axis is None and pt.scale.shape == ()
    np.testing.assert_allclose(pt.scale, 5.0 / 255, rtol=1e-6)


@pytest.mark.parametrize("lo, hi", [(0.0, 0.0), (1e-30, 1e-30), (-1e-42, 0.0), (5.0, 5.0)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_degenerate_ranges_are_safe(lo: float, hi: float, symmetric: bool):
    p = params_from_range(lo, hi, dtype="uint8", symmetric=symmetric)
    assert np.isfinite(p.scale) and p.scale >= MIN_SCALE
    assert dequantize(quantize(np.float32(0.0), p), p) == 0.0
    q, scale = int32_bias(np.array([0.3, -2.0], np.float32), p.scale, p.scale)
    assert np.isfinite(scale) and scale > 0 and q.dtype == np.int32


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="finite"):
        params_from_range(0.0, np.inf, dtype="int8", symmetric=True)
    with pytest.raises(ValueError, match="axis"):
        params_from_range(np.zeros(3), np.ones(3), dtype="int8", symmetric=True)


def test_int32_bias_per_channel_and_clipping():
    in_scale = np.float32(0.02)
    w_scale = np.array([0.01, 0.5, 1e-6], np.float32)
    bias = np.array([0.123, -3.0, 1e9], np.float32)
    q, scale = int32_bias(bias, in_scale, w_scale)
    assert q.dtype == np.int32 and scale.dtype == np.float32 and scale.shape == (3,)
    assert scale.tobytes() == (in_scale * w_scale).tobytes()
    np.testing.assert_array_equal(q, [np.rint(0.123 / float(scale[0])), -300, 2**31 - 1])
    q0, s0 = int32_bias(np.array([1.0, -1.0], np.float32), 0.0, 0.5)
    np.testing.assert_array_equal(q0, [2**31 - 1, -(2**31)])
    assert s0.shape == ()


@settings(max_examples=200, deadline=None)
@given(
    lo=st.floats(-1e4, 0, allow_subnormal=False),
    hi=st.floats(0, 1e4, allow_subnormal=False),
    fractions=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    dtype=st.sampled_from(["uint8", "int8"]),
    symmetric=st.booleans(),
)
def test_round_trip_error_is_at_most_half_a_step(lo, hi, fractions, dtype, symmetric):
    p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric)
    x = (np.float64(lo) + np.array(fractions) * (np.float64(hi) - lo)).astype(np.float32)
    x = np.clip(x, np.float32(lo), np.float32(hi))  # rounding to float32 may step outside
    error = np.abs(dequantize(quantize(x, p), p).astype(np.float64) - x)
    assert np.all(error <= _half_step(p, x))


def _half_step(p: QuantParams, x: np.ndarray) -> np.ndarray:
    """scale / 2, plus the float32 rounding of x / scale and of the result (2 ulps of x)."""
    return float(p.scale) / 2 * (1 + 1e-5) + np.abs(x.astype(np.float64)) * 2.4e-7
