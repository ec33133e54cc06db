"""Weight sparsity (``passes/prune/sparsity.py``) and sparse initializers on save
(``backends/sparse_initializers.py``, ``save(sparse=True)``, the loader's way back).

Judged against independent references: numpy masks computed from the definitions (the N:M
groups cut along the axis TensorRT reads, the k smallest magnitudes, Wanda's |W| * ||X||
ranked per output row from norms numpy computes on the data), ONNX Runtime runs of the
original model with those numpy-masked weights, and ONNX Runtime on the dense file for the
sparse one (bit-identical outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.backends.sparse_initializers import to_sparse
from onnxpress.errors import BadInputError
from onnxpress.ir.verify import verify
from onnxpress.passes.prune.sparsity import sparsify

MODELS = Path(onnxpress.__file__).resolve().parent / "models"


# --------------------------------------------------------------------------- helpers


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Distinct magnitudes (no ties) for every layer of ``layers_model``."""
    rng = np.random.default_rng(seed)
    shapes = {"conv_w": (8, 8, 3, 3), "mm_w": (16, 12), "gemm_t_w": (8, 12),
              "gemm_w": (8, 12), "lin_w": (12, 16)}
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def layers_model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [2, 8, 4, 4] -> Conv(conv_w [O=8, C=8, 3, 3]) -> Flatten... -> MatMul(mm_w [K=16, N=12])
    -> Gemm(transB=1, gemm_t_w [N=8, K=12]) -> Gemm(transB=0, gemm_w [K=8, N=12])
    -> MatMul(Transpose(lin_w [N=12, K=16])...). Each weight has its reduction axis where the
    name says, so a wrong axis shows."""
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c"], ["r"], axes=[2, 3], keepdims=0),  # [2, 8]
        helper.make_node("Concat", ["r", "r"], ["r2"], axis=1),  # [2, 16]
        helper.make_node("MatMul", ["r2", "mm_w"], ["a"], name="matmul"),  # [2, 12]
        helper.make_node("Gemm", ["a", "gemm_t_w"], ["b"], name="gemm_t", transB=1),  # [2, 8]
        helper.make_node("Gemm", ["b", "gemm_w"], ["d"], name="gemm"),  # [2, 12]
        helper.make_node("Concat", ["d", "r"], ["e"], axis=1),  # [2, 20]
        helper.make_node("Slice", ["e", "start", "stop", "axis1"], ["f"]),  # [2, 16]
        helper.make_node("Transpose", ["lin_w"], ["lin_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["f", "lin_t"], ["y"], name="linear"),  # [2, 12]
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in w.items()] + [
        numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
        [("start", [0]), ("stop", [16]), ("axis1", [1])]]
    graph = helper.make_graph(
        nodes, "layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 12])], inits)
    return make(graph)


def make(graph: onnx.GraphProto, ir_version: int = 8) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=ir_version)


def sparsified(model: onnxpress.ir.Model) -> dict[str, np.ndarray]:
    return {v.name: v.const_value.numpy() for v in model.graph.initializers.values()}


def groups_along(w: np.ndarray, axis: int, m: int = 4) -> np.ndarray:
    """``w`` cut into runs of ``m`` consecutive elements along ``axis``: [groups, m]."""
    return np.moveaxis(w, axis, -1).reshape(-1, m)


#: the reduction (input-feature) axis of each weight as stored, from the layer definitions
REDUCTION_AXIS = {"conv_w": 1, "mm_w": 0, "gemm_t_w": 1, "gemm_w": 0, "lin_w": 1}


def ort_outputs(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's first output for ``x`` fed to the first input."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    runner = Runner(source, threads=1)
    return runner.run({runner.input_names[0]: x})[runner.output_names[0]]


def with_weights(proto: onnx.ModelProto, w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``proto`` whose named initializers hold ``w``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for tensor in out.graph.initializer:
        if tensor.name in w:
            tensor.CopyFrom(numpy_helper.from_array(w[tensor.name], tensor.name))
    return out


# --------------------------------------------------------------------------- N:M


def test_2_4_pattern_holds_along_the_reduction_axis_and_keeps_the_largest():
    w = weights()
    proto = layers_model(w)
    model = onnxpress.load(proto)
    stats, notes = sparsify(model, structure="nm", n=2, m=4)
    verify(model)
    out = sparsified(model)
    assert stats["layers_sparsified"] == 5 and stats["layers_skipped"] == 0 and not notes
    reference = {}
    for name, axis in REDUCTION_AXIS.items():
        groups = groups_along(out[name], axis)
        assert (np.count_nonzero(groups == 0, axis=1) >= 2).all(), name
        # the survivors are the 2 largest magnitudes of each group, unchanged
        original = groups_along(w[name], axis)
        top2 = np.sort(np.argsort(-np.abs(original), axis=1)[:, :2], axis=1)
        kept = np.sort(np.argsort(groups == 0, axis=1, kind="stable")[:, :2], axis=1)
        np.testing.assert_array_equal(kept, top2, err_msg=name)
        np.testing.assert_array_equal(groups[groups != 0], original[groups != 0])
        # and along another axis the pattern does not hold: the axis matters
        other = 0 if axis != 0 else 1
        if out[name].shape[other] % 4 == 0:
            loose = groups_along(out[name], other)
            assert (np.count_nonzero(loose == 0, axis=1) < 2).any(), name
        mask = np.moveaxis((groups != 0).reshape(np.moveaxis(w[name], axis, -1).shape), -1, axis)
        reference[name] = np.where(mask, w[name], 0).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((2, 8, 4, 4)).astype(np.float32)
    expected = ort_outputs(with_weights(proto, reference), x)
    np.testing.assert_array_equal(ort_outputs(onnxpress.to_proto(model), x), expected)


def test_1_4_keeps_one_of_four():
    model = onnxpress.load(layers_model(weights()))
    sparsify(model, structure="nm", n=1, m=4)
    for name, axis in REDUCTION_AXIS.items():
        groups = groups_along(sparsified(model)[name], axis)
        assert (np.count_nonzero(groups, axis=1) == 1).all(), name


def test_a_layer_whose_reduction_axis_is_not_a_multiple_of_m_stays_dense():
    w = {"w6": np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32),
         "w8": np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w6"], ["h"], name="k_is_6"),
         helper.make_node("MatMul", ["h", "w8"], ["y"], name="k_is_8")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(a, n) for n, a in w.items()])
    model = onnxpress.load(make(graph))
    stats, notes = sparsify(model, structure="nm")
    out = sparsified(model)
    np.testing.assert_array_equal(out["w6"], w["w6"])
    assert np.count_nonzero(out["w8"]) == out["w8"].size // 2
    assert stats["layers_sparsified"] == 1 and stats["layers_skipped"] == 1
    assert len(notes) == 1 and "k_is_6" in notes[0] and "m=4" in notes[0]


# --------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_unstructured_zeroes_the_fraction_of_each_layer_smallest_first(fraction):
    w = weights(4)
    model = onnxpress.load(layers_model(w))
    stats, _ = sparsify(model, structure="unstructured", sparsity=fraction)
    out = sparsified(model)
    total = 0
    for name in REDUCTION_AXIS:
        zeroed = out[name] == 0
        assert zeroed.sum() == int(np.floor(fraction * w[name].size + 0.5)), name
        assert np.abs(w[name][zeroed]).max() <= np.abs(w[name][~zeroed]).min(), name
        np.testing.assert_array_equal(out[name][~zeroed], w[name][~zeroed])
        total += int(zeroed.sum())
    assert stats["weights_zeroed"] == total


def test_equal_scores_are_pruned_in_a_fixed_order():
    w = {name: np.ones_like(a) for name, a in weights().items()}
    first, second = (onnxpress.load(layers_model(w)) for _ in range(2))
    for model in (first, second):
        sparsify(model, structure="unstructured", sparsity=0.5)
    for name in w:
        np.testing.assert_array_equal(sparsified(first)[name], sparsified(second)[name])
        flat = sparsified(first)[name].reshape(-1)
        assert (flat[: flat.size // 2] == 0).all() and (flat[flat.size // 2 :] == 1).all()


# --------------------------------------------------------------------------- activation-aware


def two_layer_matmul(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="second")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, w1.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, w2.shape[1]])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return make(graph)


def wanda_reference(w: np.ndarray, x: np.ndarray, fraction: float) -> np.ndarray:
    """Wanda from its definition for ``w [K, N]`` read as ``x @ w``: |W_kn| * ||X_k||_2 over
    every row of x, the smallest ``fraction`` of each output column n zeroed."""
    norm = np.sqrt((x.reshape(-1, x.shape[-1]).astype(np.float64) ** 2).sum(axis=0))
    score = np.abs(w) * norm[:, None].astype(np.float32)
    out = w.copy()
    count = int(np.floor(fraction * w.shape[0] + 0.5))
    for n in range(w.shape[1]):
        out[np.argsort(score[:, n], kind="stable")[:count], n] = 0
    return out


def test_activation_aware_follows_the_data_and_matches_wanda():
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    w1[0] *= 0.01  # input feature 0 has the smallest weights...
    w2 = rng.standard_normal((6, 4)).astype(np.float32)
    batches = [{"x": rng.standard_normal((2, 3, 8)).astype(np.float32) * np.float32(
        [1000, 1, 1, 1, 1, 1, 1, 1])} for _ in range(3)]  # ...and by far the largest inputs
    magnitude = onnxpress.load(two_layer_matmul(w1, w2))
    sparsify(magnitude, structure="unstructured", sparsity=0.5)
    assert (sparsified(magnitude)["w1"][0] == 0).all()
    aware = onnxpress.load(two_layer_matmul(w1, w2))
    stats, _ = sparsify(aware, structure="unstructured", sparsity=0.5, importance="activation",
                        data=batches)
    assert (sparsified(aware)["w1"][0] != 0).all()  # the busy channel keeps its weights
    x = np.concatenate([b["x"] for b in batches])
    np.testing.assert_array_equal(sparsified(aware)["w1"], wanda_reference(w1, x, 0.5))
    # the second layer's input is the first one's output, as the original model computes it
    h = ort_outputs(_with_output(two_layer_matmul(w1, w2), "h"), x)
    np.testing.assert_allclose(sparsified(aware)["w2"], wanda_reference(w2, h, 0.5), rtol=0)
    assert stats["layers_sparsified"] == 2


def _with_output(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


def test_activation_aware_n_m_on_a_grouped_conv_uses_each_groups_channels():
    """Conv(group=2) [O=4, C/g=4, 1, 1] on 8 input channels: output o meets channels
    (o // 2) * 4 + c. One huge channel per group decides who survives each group of 4."""
    rng = np.random.default_rng(6)
    w = (rng.random((4, 4, 1, 1)).astype(np.float32) + 1.0) * np.float32(
        [1, 2, 3, 4]).reshape(1, 4, 1, 1)  # magnitude alone keeps channels 2 and 3
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=2, name="grouped")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 3, 3])],
        [numpy_helper.from_array(w, "w")])
    proto = make(graph)
    scale = np.float32([100, 1, 1, 1, 1, 1, 1, 100]).reshape(1, 8, 1, 1)
    data = [{"x": rng.standard_normal((2, 8, 3, 3)).astype(np.float32) * scale}]
    model = onnxpress.load(proto)
    sparsify(model, structure="nm", importance="activation", data=data)
    out = sparsified(model)["w"][:, :, 0, 0]
    norm = np.sqrt((data[0]["x"].astype(np.float64) ** 2).sum(axis=(0, 2, 3)))
    expected = np.zeros_like(out)
    for o in range(4):
        channels = (o // 2) * 4 + np.arange(4)
        score = np.abs(w[o, :, 0, 0]) * norm[channels].astype(np.float32)
        keep = np.argsort(score, kind="stable")[2:]
        expected[o, keep] = w[o, keep, 0, 0]
    np.testing.assert_array_equal(out, expected)
    assert (out[:2, 0] != 0).all() and (out[2:, 3] != 0).all()  # the busy channels survive


# --------------------------------------------------------------------------- what is left alone


def test_shared_non_constant_and_foreign_weights():
    rng = np.random.default_rng(7)
    shared = rng.standard_normal((4, 4)).astype(np.float32)
    also_added = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "shared"], ["a"], name="reads_shared_1"),
        helper.make_node("MatMul", ["a", "shared"], ["b"], name="reads_shared_2"),
        helper.make_node("MatMul", ["b", "x_t"], ["c"], name="activation_times_activation"),
        helper.make_node("MatMul", ["c", "also_added"], ["d"], name="weight_also_added"),
        helper.make_node("Add", ["d", "also_added"], ["y"]),
        helper.make_node("Transpose", ["x"], ["x_t"]),
    ]
    graph = helper.make_graph(
        [nodes[-1], *nodes[:-1]], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        [numpy_helper.from_array(shared, "shared"), numpy_helper.from_array(also_added,
                                                                            "also_added")])
    model = onnxpress.load(make(graph))
    stats, notes = sparsify(model, structure="nm")
    out = sparsified(model)
    assert stats["layers_sparsified"] == 2 and stats["weights_zeroed"] == 8  # once, not twice
    np.testing.assert_array_equal(out["also_added"], also_added)
    text = " ".join(notes)
    assert "activation_times_activation" in text and "not a constant" in text
    assert "weight_also_added" in text and "also read by other nodes" in text


def test_excluded_and_constant_node_weights():
    w = np.random.default_rng(8).standard_normal((4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
         helper.make_node("MatMul", ["x", "w"], ["h"], name="from_constant"),
         helper.make_node("MatMul", ["h", "v"], ["y"], name="kept")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w.copy(), "v")])
    proto = make(graph)
    model = onnxpress.load(proto)
    stats, notes = sparsify(model, structure="nm", exclude=("kept",))
    assert stats["layers_sparsified"] == 1 and any("excluded" in n and "kept" in n for n in notes)
    x = np.random.default_rng(9).standard_normal((2, 4)).astype(np.float32)
    masked = np.where(np.abs(w) >= np.sort(np.abs(w), axis=0)[2:3], w, 0).astype(np.float32)
    reference = make(helper.make_graph(
        [proto.graph.node[1], proto.graph.node[2]], "g", list(proto.graph.input),
        list(proto.graph.output),
        [numpy_helper.from_array(masked, "w"), numpy_helper.from_array(w, "v")]))
    np.testing.assert_array_equal(ort_outputs(onnxpress.to_proto(model), x),
                                  ort_outputs(reference, x))


@pytest.mark.parametrize("options, words", [
    ({"structure": "blocks"}, "structure"),
    ({"structure": "unstructured", "sparsity": 1.0}, "sparsity"),
    ({"structure": "unstructured", "sparsity": -0.1}, "sparsity"),
    ({"structure": "nm", "n": 4, "m": 4}, "n < m"),
    ({"structure": "nm", "n": 0, "m": 4}, "n < m"),
    ({"structure": "nm", "importance": "hessian"}, "importance"),
    ({"structure": "nm", "ops": ("Conv", "Einsum")}, "Einsum"),
    ({"structure": "nm", "importance": "activation"}, "--calibration"),
])
def test_bad_options_raise_one_line_errors(options, words):
    model = onnxpress.load(layers_model(weights()))
    with pytest.raises(BadInputError) as error:
        sparsify(model, **options)
    assert words in str(error.value) and "\n" not in str(error.value)
    np.testing.assert_array_equal(sparsified(model)["mm_w"], weights()["mm_w"])  # untouched


# --------------------------------------------------------------------------- sparse initializers


def matmul_with(w: np.ndarray, ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    return make(graph, ir_version)


def half_zero(shape: tuple[int, int], dtype=np.float32, fraction: float = 0.5,
              seed: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(dtype)
    w[rng.random(shape) < fraction] = 0
    return w


def test_to_sparse_encoding_is_linear_int64_varints_and_exact():
    w = half_zero((256, 64))
    w.reshape(-1)[np.flatnonzero(w == 0)[:3]] = -0.0  # negative zeros are values, not zeros
    proto = matmul_with(w)
    dense_bytes = proto.graph.initializer[0].ByteSize()
    assert to_sparse(proto) == 1
    assert not proto.graph.initializer
    (sparse,) = proto.graph.sparse_initializer
    nonzero = np.flatnonzero(w.view(np.uint32))
    assert sparse.indices.data_type == TensorProto.INT64 and list(sparse.dims) == [256, 64]
    assert list(sparse.indices.dims) == [nonzero.size] and not sparse.indices.raw_data
    np.testing.assert_array_equal(numpy_helper.to_array(sparse.indices), nonzero)
    assert sparse.ByteSize() < 0.8 * dense_bytes  # 2-byte varints: (4 + 2) / 8 of dense
    onnx.checker.check_model(proto)
    x = np.random.default_rng(11).standard_normal((2, 256)).astype(np.float32)
    got, expected = ort_outputs(proto, x), ort_outputs(matmul_with(w), x)
    assert got.tobytes() == expected.tobytes()


def test_to_sparse_keeps_what_would_not_shrink():
    proto = matmul_with(half_zero((64, 64), fraction=0.0))  # no zeros
    assert to_sparse(proto) == 0 and len(proto.graph.initializer) == 1
    half = matmul_with(half_zero((64, 64), np.float16))  # 2-byte values + 2-byte indices
    assert to_sparse(half) == 0
    sparse_half = matmul_with(half_zero((64, 64), np.float16, fraction=0.9))
    assert to_sparse(sparse_half) == 1
    old = matmul_with(half_zero((64, 64)), ir_version=5)  # before sparse initializers
    assert to_sparse(old) == 0
    overridable = matmul_with(half_zero((64, 64)))
    overridable.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT,
                                                                 [64, 64]))
    assert to_sparse(overridable) == 0


def test_load_reads_sparse_initializers_back_as_dense(tmp_path):
    w = half_zero((16, 8))
    proto = matmul_with(w)
    nonzero = np.flatnonzero(w)
    coordinates = np.stack(np.unravel_index(nonzero, w.shape), axis=1).astype(np.int32)
    del proto.graph.initializer[:]
    proto.graph.sparse_initializer.append(helper.make_sparse_tensor(  # the other layout
        numpy_helper.from_array(w.reshape(-1)[nonzero], "w"),
        numpy_helper.from_array(coordinates, "w_indices"), [16, 8]))
    before = proto.SerializeToString()
    model = onnxpress.load(proto)
    assert proto.SerializeToString() == before  # the caller's proto is not changed
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), w)
    path = tmp_path / "coordinates.onnx"
    path.write_bytes(before)
    np.testing.assert_array_equal(
        onnxpress.load(path).graph.initializers["w"].const_value.numpy(), w)


def test_save_sparse_with_external_data_keeps_large_weights_dense(tmp_path):
    w = half_zero((64, 64))
    path = onnxpress.save(onnxpress.load(matmul_with(w)), tmp_path / "m.onnx",
                          external_data=True, sparse=True)
    proto = onnx.load(path, load_external_data=False)
    assert not proto.graph.sparse_initializer  # 16 KB: in the data file, dense
    x = np.random.default_rng(12).standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_array_equal(ort_outputs(path, x), ort_outputs(matmul_with(w), x))


# --------------------------------------------------------------------------- shipped models


@pytest.fixture(scope="module")
def digits_images() -> np.ndarray:
    return np.load(MODELS / "digits_test.npz")["image"][:64]


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
@pytest.mark.parametrize("structure, importance", [
    ("unstructured", "magnitude"), ("nm", "magnitude"), ("nm", "activation")])
def test_digits_models_sparsified_save_smaller_and_identical(
        tmp_path, digits_images, name, structure, importance):
    data = onnxpress.CalibrationData(MODELS / "digits_calibration.npz", batch_size=32)
    model = onnxpress.load(MODELS / f"{name}.onnx")
    stats, notes = sparsify(model, structure=structure, importance=importance, data=data)
    verify(model)
    assert stats["layers_sparsified"] >= 3
    for value in model.graph.initializers.values():
        array = value.const_value.numpy()
        if structure == "nm" and array.ndim == 4 and array.shape[1] % 4 == 0:  # Conv weights
            groups = groups_along(array, 1)
            assert (np.count_nonzero(groups == 0, axis=1) >= 2).all(), value.name
    dense = onnxpress.save(model, tmp_path / "dense.onnx")
    sparse = onnxpress.save(model, tmp_path / "sparse.onnx", sparse=True)
    # every weight here has < 2**21 elements: 2-3 byte indices, so 50% pays (findings)
    assert sparse.stat().st_size < 0.9 * dense.stat().st_size
    onnx.checker.check_model(onnx.load(sparse))
    expected = ort_outputs(dense, digits_images)
    assert ort_outputs(sparse, digits_images).tobytes() == expected.tobytes()
    round_trip = onnxpress.save(onnxpress.load(sparse), tmp_path / "again.onnx")
    assert ort_outputs(round_trip, digits_images).tobytes() == expected.tobytes()
    # one-shot, no fine-tuning: well above chance (0.1), the benchmark reports the numbers
    assert onnxpress.evaluate(sparse, "digits").value > 0.25
