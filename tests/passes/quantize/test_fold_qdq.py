"""``fold-qdq``: each rewrite on a small hand-built graph (positive and negative), the weight
folding against ONNX Runtime's own QuantizeLinear, and whole models as they arrive: ONNX
Runtime's static QDQ output and PyTorch fake-quant exports. "Exact" means bit-identical
outputs on ONNX Runtime, with graph optimisations off (so our rewrite is what is tested) and
with its default options (what a user runs), and on onnx.reference for the small graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from pass_checks import checked_proto

import onnxpress
from onnxpress.backends.ort_runner import inference_session
from onnxpress.passes.quantize.fold.fold_qdq import FoldQdq

MODELS = Path(onnxpress.models.__file__).parent
DIGITS = np.load(MODELS / "digits_test.npz")["image"]
U8, I8 = TensorProto.UINT8, TensorProto.INT8


# --------------------------------------------------------------------------- helpers


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    """Opset 21: blocked and 16-bit Q/DQ, and onnx.reference runs Q/DQ from opset 19."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                              ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _qparams(prefix, scale, zero, qtype=U8):
    dtype = helper.tensor_dtype_to_np_dtype(qtype)
    return [_init(f"{prefix}_s", np.asarray(scale, np.float32)),
            _init(f"{prefix}_z", np.asarray(zero, dtype))]


def _q(x, out, prefix, **attrs):
    return helper.make_node("QuantizeLinear", [x, f"{prefix}_s", f"{prefix}_z"], [out], **attrs)


def _dq(x, out, prefix, **attrs):
    return helper.make_node("DequantizeLinear", [x, f"{prefix}_s", f"{prefix}_z"], [out], **attrs)


def _run(model: onnx.ModelProto | str, feeds, optimize: bool) -> list[np.ndarray]:
    def configure(options: ort.SessionOptions) -> None:
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    source = model if isinstance(model, str) else model.SerializeToString()
    return inference_session(source, configure).run(None, feeds)  # exact int8 without VNNI


def _fold(proto: onnx.ModelProto, **options):
    """Run the pass; the result passes verify() and the full ONNX checker."""
    model = onnxpress.load(proto)
    result = FoldQdq(**options)(model)
    return checked_proto(model), result


def _assert_exact(before, after, feeds, reference: bool = True) -> None:
    """Bit-identical on ONNX Runtime (optimisations off and on) and on onnx.reference."""
    runs = {f"ort(optimize={o})": lambda m, o=o: _run(m, feeds, o) for o in (False, True)}
    if reference:
        runs["onnx.reference"] = lambda m: ReferenceEvaluator(m).run(None, feeds)
    for label, run in runs.items():
        for a, b in zip(run(before), run(after), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), (
                f"{label}: max |a-b| = {np.abs(a - b).max()}")


def _ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def _fed_by(proto: onnx.ModelProto, op: str) -> list[str]:
    """The op types that produce the first input of every ``op`` node."""
    producers = {out: n.op_type for n in proto.graph.node for out in n.output}
    return [producers.get(n.input[0], "input") for n in proto.graph.node if n.op_type == op]


def _feeds(shape=(2, 3, 4, 4), seed=0, scale=3.0):
    return {"x": (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)}


# --------------------------------------------------------------------------- weight folding


def _weight_case(shape, qtype, axis=None, block=0, seed=0):
    """W (random, plus exact ties, huge values and infinities), s, zp as numpy arrays."""
    rng = np.random.default_rng(seed)
    dtype = helper.tensor_dtype_to_np_dtype(qtype)
    info = np.iinfo(dtype)
    if block:
        params_shape = list(shape)
        params_shape[axis] = -(-shape[axis] // block)
    else:
        params_shape = [] if axis is None else [shape[axis]]
    powers = 2.0 ** -rng.integers(2, 6, params_shape)  # weights on multiples of s/2: ties
    scale = np.where(rng.random(params_shape) < 0.7, powers, powers * 1.37).astype(np.float32)
    zero = rng.integers(info.min // 4, info.max // 4 + 1, params_shape).astype(dtype)
    steps = rng.integers(-300, 300, shape) + 0.5 * rng.integers(0, 2, shape)
    weight = (steps * 2.0 ** -rng.integers(2, 6, shape)).astype(np.float32)
    if not block:  # see test_blocked_weight_beyond_int32_is_left_alone
        weight.reshape(-1)[:3] = [1e30, -np.inf, np.inf]
    return weight, scale, zero


@pytest.mark.parametrize("qtype", [U8, I8, TensorProto.INT16, TensorProto.UINT16])
@pytest.mark.parametrize("shape,axis,block", [
    ((16, 8, 3, 3), None, 0), ((16, 8, 3, 3), 0, 0), ((16, 8), -1, 0), ((16, 10), 1, 4),
    ((12, 10), 0, 5),
])
def test_folded_weight_equals_ort_quantize(qtype, shape, axis, block):
    weight, scale, zero = _weight_case(shape, qtype, axis, block)
    attrs = ({} if axis is None else {"axis": axis}) | ({"block_size": block} if block else {})
    params = [_init("w_s", scale), _init("w_z", zero)]
    alone = _model([_q("w", "q", "w", **attrs)], [_info("w", shape)], [_info("q", shape, qtype)],
                   params)
    expected = _run(alone, {"w": weight}, optimize=False)[0]
    pair = _model([_q("w", "q", "w", **attrs), _dq("q", "y", "w", **attrs)], [],
                  [_info("y", shape)], [_init("w", weight), *params])
    out, result = _fold(pair)
    assert result.stats["weights_folded"] == 1 and _ops(out) == ["DequantizeLinear"]
    folded = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert "w" not in folded  # the float weight is gone
    assert np.array_equal(folded["w_quantized"], expected)
    # onnx.reference casts x / s to int32 before saturating: wrong for 1e30 and inf
    _assert_exact(pair, out, {}, reference=False)


def test_blocked_weight_beyond_int32_is_left_alone():
    """ONNX Runtime's blocked QuantizeLinear along a non-last axis gives 0 for |x/s| >= 2**31
    (the spec saturates): folding would change what the runtime computes, so it is noted."""
    weight, scale, zero = _weight_case((12, 10), U8, 0, 4)
    weight[0, 0] = 3e9
    nodes = [_q("w", "q", "w", axis=0, block_size=4), _dq("q", "y", "w", axis=0, block_size=4)]
    proto = _model(nodes, [], [_info("y", [12, 10])],
                   [_init("w", weight), _init("w_s", scale), _init("w_z", zero)])
    out, result = _fold(proto)
    assert result.stats["weights_folded"] == 0
    assert any("2**31" in note for note in result.notes), result.notes


@pytest.mark.parametrize("weight_type,qtype,reason", [
    (np.float16, U8, "float16 weights"),
    (np.float32, TensorProto.INT4, "INT4 weights are not folded"),
])
def test_weight_not_folded_is_noted(weight_type, qtype, reason):
    weight = np.linspace(-1, 1, 12, dtype=weight_type).reshape(3, 4)
    scale = np.asarray(0.01, weight_type)
    zero = np.asarray(0, helper.tensor_dtype_to_np_dtype(qtype))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(weight_type))
    proto = _model([_q("w", "q", "w"), _dq("q", "y", "w")], [], [_info("y", [3, 4], elem)],
                   [_init("w", weight), _init("w_s", scale), _init("w_z", zero)])
    out, result = _fold(proto)
    assert result.stats["weights_folded"] == 0 and _ops(out) == _ops(proto)
    assert any(reason in note for note in result.notes), result.notes


# --------------------------------------------------------------------------- redundant pairs


def _chain(second_scale, second_zero=100, output_q=False):
    """x -> Q -> DQ -> Q' -> DQ' -> y, the second pair with its own parameters."""
    nodes = [_q("x", "q1", "a"), _dq("q1", "d1", "a"), _q("d1", "q2", "b"), _dq("q2", "y", "b")]
    outputs = [_info("y", [2, 3, 4, 4])] + ([_info("q2", [2, 3, 4, 4], U8)] if output_q else [])
    return _model(nodes, [_info("x", [2, 3, 4, 4])], outputs,
                  _qparams("a", 0.05, 100) + _qparams("b", second_scale, second_zero))


def test_redundant_pair_removed():
    proto = _chain(0.05)
    out, result = _fold(proto)
    assert result.stats["redundant_pairs"] == 1
    assert _ops(out) == ["QuantizeLinear", "DequantizeLinear"]
    _assert_exact(proto, out, _feeds())


def test_redundant_pair_at_graph_output_keeps_its_name():
    proto = _chain(0.05, output_q=True)
    out, result = _fold(proto)
    assert result.stats["redundant_pairs"] == 1
    assert [o.name for o in out.graph.output] == ["y", "q2"]
    _assert_exact(proto, out, _feeds())


@pytest.mark.parametrize("scale,zero", [(0.1, 100), (0.05, 101)])
def test_requantization_kept_with_a_note(scale, zero):
    proto = _chain(scale, zero)
    out, result = _fold(proto)
    assert result.stats["redundant_pairs"] == 0 and _ops(out) == _ops(proto)
    assert any("requantization" in note for note in result.notes), result.notes


# --------------------------------------------------------------------------- moving through ops


def _through(op_node, in_shape, out_shape, extra=(), qtype=U8, zero=100, scale=0.05):
    nodes = [_q("x", "q1", "a"), _dq("q1", "d1", "a"), op_node, _q("m", "q2", "a"),
             _dq("q2", "y", "a")]
    return _model(nodes, [_info("x", in_shape)], [_info("y", out_shape)],
                  _qparams("a", scale, zero, qtype) + list(extra))


_MOVES = {
    "Reshape": (helper.make_node("Reshape", ["d1", "shape"], ["m"]), (2, 3, 4, 4), (2, 3, 16),
                [_init("shape", np.array([2, 3, 16], np.int64))]),
    "Transpose": (helper.make_node("Transpose", ["d1"], ["m"], perm=[0, 2, 3, 1]),
                  (2, 3, 4, 4), (2, 4, 4, 3), []),
    "Flatten": (helper.make_node("Flatten", ["d1"], ["m"], axis=2), (2, 3, 4, 4), (6, 16), []),
    "Squeeze": (helper.make_node("Squeeze", ["d1", "axes"], ["m"]), (2, 1, 4, 4), (2, 4, 4),
                [_init("axes", np.array([1], np.int64))]),
    "Unsqueeze": (helper.make_node("Unsqueeze", ["d1", "axes"], ["m"]), (2, 3, 4, 4),
                  (2, 1, 3, 4, 4), [_init("axes", np.array([1], np.int64))]),
    "Slice": (helper.make_node("Slice", ["d1", "starts", "ends", "axes"], ["m"]), (2, 3, 4, 4),
              (2, 3, 2, 4), [_init("starts", np.array([1], np.int64)),
                             _init("ends", np.array([3], np.int64)),
                             _init("axes", np.array([2], np.int64))]),
    "Gather": (helper.make_node("Gather", ["d1", "idx"], ["m"], axis=1), (2, 3, 4, 4),
               (2, 2, 4, 4), [_init("idx", np.array([2, 0], np.int64))]),
    "MaxPool": (helper.make_node("MaxPool", ["d1"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 strides=[2, 2]), (2, 3, 5, 5), (2, 3, 3, 3), []),
}


@pytest.mark.parametrize("qtype,zero", [(U8, 100), (I8, -3)])
@pytest.mark.parametrize("op", sorted(_MOVES))
def test_dequantize_moved_through_data_movement(op, qtype, zero):
    node, in_shape, out_shape, extra = _MOVES[op]
    proto = _through(node, in_shape, out_shape, extra, qtype, zero)
    if qtype == I8:  # left in place unless asked (module doc: ORT on x86 fuses them there)
        kept, result = _fold(proto)
        assert result.stats["moved_through"] == 0 and _ops(kept) == _ops(proto), result.notes
    out, result = _fold(proto, int8_moves=True)
    assert result.stats["moved_through"] == 1, result.notes
    assert _ops(out) == ["QuantizeLinear", op, "DequantizeLinear"]
    _assert_exact(proto, out, _feeds(in_shape))


def test_maxpool_with_a_negative_scale_is_not_moved():
    node, in_shape, out_shape, extra = _MOVES["MaxPool"]
    proto = _through(node, in_shape, out_shape, extra, scale=-0.05)
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 0 and _ops(out) == _ops(proto)
    assert any("not a positive normal float" in note for note in result.notes), result.notes


def test_shared_dequantize_stays_for_its_other_user():
    nodes = [_q("x", "q1", "a"), _dq("q1", "d1", "a"),
             helper.make_node("Transpose", ["d1"], ["m"], perm=[0, 2, 3, 1]),
             _q("m", "q2", "a"), _dq("q2", "y", "a"), helper.make_node("Relu", ["d1"], ["z"])]
    outputs = [_info("y", [2, 4, 4, 3]), _info("z", [2, 3, 4, 4])]
    proto = _model(nodes, [_info("x", [2, 3, 4, 4])], outputs, _qparams("a", 0.05, 100))
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 1
    assert sorted(_ops(out)) == sorted(["QuantizeLinear", "DequantizeLinear", "Transpose",
                                        "DequantizeLinear", "Relu"])
    _assert_exact(proto, out, _feeds())


def _concat(second_scale):
    nodes = [_q("x", "q1", "a"), _dq("q1", "d1", "a"), helper.make_node("Neg", ["x"], ["n"]),
             _q("n", "q2", "b"), _dq("q2", "d2", "b"),
             helper.make_node("Concat", ["d1", "d2"], ["m"], axis=1),
             _q("m", "q3", "a"), _dq("q3", "y", "a")]
    return _model(nodes, [_info("x", [2, 3, 4, 4])], [_info("y", [2, 6, 4, 4])],
                  _qparams("a", 0.05, 100) + _qparams("b", second_scale, 100))


def test_concat_of_equal_parameters_moved():
    proto = _concat(0.05)
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 1
    assert _ops(out).count("DequantizeLinear") == 1 and _ops(out)[-1] == "DequantizeLinear"
    _assert_exact(proto, out, _feeds())


def test_concat_of_other_parameters_kept():
    proto = _concat(0.1)
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 0 and _ops(out) == _ops(proto)
    assert any("Concat" in note for note in result.notes), result.notes


def _per_axis_transpose(perm, dq_axis, q_axis, out_shape):
    """Per-channel Q/DQ (4 channels) around a Transpose of a [2, 4, 4, 4] tensor."""
    scale = np.array([0.05, 0.1, 0.02, 0.07], np.float32)
    nodes = [_q("x", "q1", "a", axis=dq_axis), _dq("q1", "d1", "a", axis=dq_axis),
             helper.make_node("Transpose", ["d1"], ["m"], perm=perm),
             _q("m", "q2", "a", axis=q_axis), _dq("q2", "y", "a", axis=q_axis)]
    return _model(nodes, [_info("x", [2, 4, 4, 4])], [_info("y", out_shape)],
                  _qparams("a", scale, [100, 90, 128, 0]))


def test_per_axis_parameters_follow_a_transpose():
    proto = _per_axis_transpose([0, 2, 3, 1], 1, 3, [2, 4, 4, 4])
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 1
    _assert_exact(proto, out, _feeds((2, 4, 4, 4)))


def test_per_axis_parameters_follow_a_gather_with_2d_indices():
    # Gather on axis 1 with [2, 3] indices: [2, 4, 4, 4] -> [2, 2, 3, 4, 4], channels 3 -> 4
    scale = np.array([0.05, 0.1, 0.02, 0.07], np.float32)
    nodes = [_q("x", "q1", "a", axis=3), _dq("q1", "d1", "a", axis=3),
             helper.make_node("Gather", ["d1", "idx"], ["m"], axis=1),
             _q("m", "q2", "a", axis=4), _dq("q2", "y", "a", axis=4)]
    proto = _model(nodes, [_info("x", [2, 4, 4, 4])], [_info("y", [2, 2, 3, 4, 4])],
                   _qparams("a", scale, [100, 90, 128, 0])
                   + [_init("idx", np.array([[3, 0, 1], [2, 2, 0]], np.int64))])
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 1
    _assert_exact(proto, out, _feeds((2, 4, 4, 4)))


def test_per_axis_parameters_on_a_moved_axis_are_not_rewritten():
    # the Transpose swaps axes 2 and 3: the DQ's channel axis 2 becomes 3, the Q reads axis 2
    proto = _per_axis_transpose([0, 1, 3, 2], 2, 2, [2, 4, 4, 4])
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 0 and _ops(out) == _ops(proto)
    assert any("requantization" in note for note in result.notes), result.notes


def test_per_axis_parameters_through_reshape_are_noted():
    scale = np.array([0.05, 0.1, 0.02], np.float32)
    nodes = [_q("x", "q1", "a", axis=1), _dq("q1", "d1", "a", axis=1),
             helper.make_node("Reshape", ["d1", "shape"], ["m"]),
             _q("m", "q2", "a", axis=1), _dq("q2", "y", "a", axis=1)]
    proto = _model(nodes, [_info("x", [2, 3, 4, 4])], [_info("y", [2, 3, 16])],
                   _qparams("a", scale, [1, 2, 3]) + [_init("shape", np.array([2, 3, 16]))])
    out, result = _fold(proto)
    assert result.stats["moved_through"] == 0
    assert any("do not move through Reshape" in note for note in result.notes), result.notes


# --------------------------------------------------------------------------- Relu / Clip


def _activation(node, qtype, scale, zero, extra=()):
    nodes = [node, _q("r", "q", "a"), _dq("q", "y", "a")]
    return _model(nodes, [_info("x", [2, 3, 4, 4])], [_info("y", [2, 3, 4, 4])],
                  _qparams("a", scale, zero, qtype) + list(extra))


_RELU = helper.make_node("Relu", ["x"], ["r"])
_CLIP = helper.make_node("Clip", ["x", "lo", "hi"], ["r"])


@pytest.mark.parametrize("node,qtype,scale,zero,bounds,absorbed", [
    (_RELU, U8, 0.05, 0, None, True),
    (_RELU, I8, 0.05, -128, None, True),
    (_RELU, U8, 0.05, 3, None, False),  # Q(negative) lands below zp: the Relu matters
    (_CLIP, U8, 6 / 255, 0, (0.0, 6.0), True),
    (_CLIP, U8, 0.03, 0, (0.0, 6.0), False),  # Q reaches 7.65 > 6
    (_CLIP, I8, 1 / 128, 0, (-1.0, 1.0), True),
    (_CLIP, I8, 1 / 64, 0, (-1.0, 1.0), False),
])
def test_relu_and_clip_absorbed_only_when_q_saturates(node, qtype, scale, zero, bounds,
                                                       absorbed):
    extra = [] if bounds is None else [_init("lo", np.float32(bounds[0])),
                                       _init("hi", np.float32(bounds[1]))]
    proto = _activation(node, qtype, scale, zero, extra)
    out, result = _fold(proto)
    assert result.stats["activations_absorbed"] == int(absorbed)
    assert (node.op_type in _ops(out)) != absorbed
    if not absorbed:
        assert any(f"keeps {node.op_type}" in note for note in result.notes), result.notes
    left = {i.name for i in out.graph.initializer}
    assert left == ({"a_s", "a_z"} if absorbed else {i.name for i in proto.graph.initializer})
    _assert_exact(proto, out, _feeds(scale=6.0))  # values beyond every bound


# --------------------------------------------------------------------------- lossy option


def _exp_pair_log(consumer="Log"):
    nodes = [helper.make_node("Exp", ["x"], ["e"]), _q("e", "q", "a"), _dq("q", "d", "a"),
             helper.make_node(consumer, ["d"], ["y"])]
    proto = _model(nodes, [_info("x", [2, 3, 4, 4])], [_info("y", [2, 3, 4, 4])],
                   _qparams("a", 0.1, 0))
    return onnx.shape_inference.infer_shapes(proto)  # the lossy rewrite checks types


def test_unfusable_pair_dropped_only_when_asked():
    proto = _exp_pair_log()
    out, result = _fold(proto)
    assert result.stats["dropped_lossy"] == 0 and _ops(out) == _ops(proto)
    assert FoldQdq(drop_unfusable=True).spec() == "fold-qdq(drop_unfusable=true)"
    out, result = _fold(proto, drop_unfusable=True)
    assert result.stats["dropped_lossy"] == 1 and _ops(out) == ["Exp", "Log"]
    feeds = _feeds(scale=0.5)
    (before,), (after,) = _run(proto, feeds, False), _run(out, feeds, False)
    assert not np.array_equal(before, after)  # lossy: a rounding step is gone
    assert np.allclose(np.exp(after), np.exp(feeds["x"]), rtol=1e-6)


def test_pair_before_a_fusable_op_is_not_dropped():
    proto = _exp_pair_log("Sigmoid")
    out, result = _fold(proto, drop_unfusable=True)
    assert result.stats["dropped_lossy"] == 0 and _ops(out) == _ops(proto)


# --------------------------------------------------------------------------- whole models


def _ort_static_qdq(source: Path, target: Path, weights_as_qdq: bool) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": DIGITS[i:i + 50]} for i in range(0, 100, 50)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"AddQDQPairToWeight": weights_as_qdq})
    return target


def _fold_file(source: Path, target: Path):
    model = onnxpress.load(source)
    result = FoldQdq()(model)
    onnxpress.ir.verify(model)
    onnxpress.save(model, target)
    onnx.checker.check_model(str(target), full_check=True)
    return result


def _assert_exact_files(before: Path, after: Path, images: np.ndarray) -> None:
    for optimize in (False, True):
        (a,), (b,) = (_run(str(p), {"image": images}, optimize) for p in (before, after))
        assert np.array_equal(a, b), f"optimize={optimize}: max |a-b| = {np.abs(a - b).max()}"


@pytest.fixture(scope="module")
def cnn_qdq(tmp_path_factory) -> dict[bool, Path]:
    folder = tmp_path_factory.mktemp("cnn-qdq")
    return {flag: _ort_static_qdq(MODELS / "digits_cnn.onnx", folder / f"cnn_{flag}.onnx", flag)
            for flag in (True, False)}


def test_ort_qdq_cnn_with_float_weights_folded(cnn_qdq, tmp_path):
    source, target = cnn_qdq[True], tmp_path / "folded.onnx"
    result = _fold_file(source, target)
    assert result.stats["weights_folded"] == 7  # 3 Conv, 3 BatchNormalization, 1 Gemm
    assert result.stats["moved_through"] == 2  # MaxPool, Flatten
    assert target.stat().st_size < 0.35 * source.stat().st_size
    _assert_exact_files(source, target, DIGITS)
    folded = onnx.load(target)
    assert _fed_by(folded, "MaxPool") == _fed_by(folded, "Flatten") == ["QuantizeLinear"]


def test_ort_qdq_cnn_with_int8_weights(cnn_qdq, tmp_path):
    source, target = cnn_qdq[False], tmp_path / "folded.onnx"
    result = _fold_file(source, target)
    assert result.stats["weights_folded"] == 0 and result.stats["moved_through"] == 2
    assert not result.notes
    _assert_exact_files(source, target, DIGITS)


def test_ort_qdq_vit_folded(tmp_path):
    source = _ort_static_qdq(MODELS / "digits_vit.onnx", tmp_path / "vit.onnx", True)
    target = tmp_path / "folded.onnx"
    result = _fold_file(source, target)
    assert result.stats["weights_folded"] > 50 and result.stats["moved_through"] > 20
    assert target.stat().st_size < 0.45 * source.stat().st_size
    # the class token (its own scale) joins the patch tokens: a requantization, kept
    assert any("requantization" in note for note in result.notes), result.notes
    _assert_exact_files(source, target, DIGITS[:64])


# --------------------------------------------------------------------------- PyTorch QAT export


def _qat_export(path: Path, dynamo: bool) -> Path:
    """A small CNN as QAT leaves it: per-channel fake-quant weights, per-tensor fake-quant
    activations (a Relu before one, MaxPool and Flatten/Reshape between two)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def fake(x, scale):
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, 0, 255)

    class QatNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(64, 10)
            for name in ("conv1", "conv2", "fc"):
                w = getattr(self, name).weight.detach()
                self.register_buffer(f"{name}_s", w.abs().amax(tuple(range(1, w.dim()))) / 127)
                self.register_buffer(f"{name}_z", torch.zeros(w.shape[0], dtype=torch.int32))

        def w(self, name):
            return torch.fake_quantize_per_channel_affine(
                getattr(self, name).weight, getattr(self, f"{name}_s"), getattr(self, f"{name}_z"),
                0, -128, 127)

        def forward(self, x):
            x = fake(x, 1 / 16)
            x = fake(F.relu(F.conv2d(x, self.w("conv1"), self.conv1.bias, padding=1)), 0.05)
            x = fake(F.max_pool2d(x, 2), 0.05)
            x = fake(F.relu(F.conv2d(x, self.w("conv2"), self.conv2.bias, padding=1)), 0.1)
            x = fake(F.max_pool2d(x, 2), 0.1)
            x = fake(torch.flatten(x, 1), 0.1)
            x = fake(x.reshape(x.shape[0], -1), 0.1)
            return F.linear(x, self.w("fc"), self.fc.bias)

    example = (torch.from_numpy(DIGITS[:4]),)
    kwargs = {} if dynamo else {"dynamic_axes": {"image": {0: "n"}}}
    torch.onnx.export(QatNet().eval(), example, str(path), dynamo=dynamo,
                      opset_version=18 if dynamo else 17, input_names=["image"],
                      output_names=["logits"], **kwargs)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_fake_quant_export_folded(tmp_path, dynamo):
    source = _qat_export(tmp_path / "qat.onnx", dynamo)
    target = tmp_path / "folded.onnx"
    result = _fold_file(source, target)
    assert result.stats["weights_folded"] == 3  # conv1, conv2, fc
    assert result.stats["activations_absorbed"] == 2  # both Relus
    # 2 MaxPool, Flatten, Reshape, and (TorchScript) the Shape read of x.reshape(x.shape[0], -1)
    assert result.stats["moved_through"] == (4 if dynamo else 5)
    assert target.stat().st_size < source.stat().st_size
    folded = onnx.load(target)
    assert "Relu" not in _ops(folded)
    assert _fed_by(folded, "MaxPool") == ["QuantizeLinear"] * 2
    readers = _fed_by(folded, "Flatten") + _fed_by(folded, "Reshape") + _fed_by(folded, "Shape")
    assert "DequantizeLinear" not in readers
    assert _ops(folded).count("DequantizeLinear") == 6  # 3 weights, 3 op inputs
    _assert_exact_files(source, target, DIGITS[:4])
