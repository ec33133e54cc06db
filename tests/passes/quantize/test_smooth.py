"""``smooth``: exact in float32 on the real ViT exports (digits, zoo vit_32) and on toy blocks
(LayerNorm, SkipLayerNorm, a Relu FFN), better int8 than ``quantize`` alone when a LayerNorm
has outlier channels, skipped with a reason where a reader cannot absorb the scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import run_ort

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ
from onnxpress.passes.cleanup import Cleanup
from onnxpress.passes.quantize.smooth.smooth import Smooth
from onnxpress.passes.quantize.static.quantize import Quantize

MODELS = Path(onnxpress.models.__file__).parent
C, T, N = 64, 16, 48  # channels, tokens, reader outputs of the toy blocks
OUTLIERS = [3, 17, 40, 55]


def _run(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run_ort(model, feeds)


def _relative(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(expected[k] - actual[k]).max() / np.abs(expected[k]).max())
               for k in expected)


def _smooth_is_exact(model, data, feeds, **options) -> onnxpress.Report:
    """cleanup, then smooth: ORT's float32 outputs stay within 1e-5 relative."""
    cleaned = onnxpress.compile(model, [Cleanup()])
    before = _run(cleaned, feeds)
    smoothed, report = onnxpress.compile(cleaned, [Smooth(**options)], calibration=data,
                                         return_report=True)
    onnx.checker.check_model(onnxpress.to_proto(smoothed), full_check=True)
    assert _relative(before, _run(smoothed, feeds)) < 1e-5
    return report


# --------------------------------------------------------------------------- toy blocks


def _block(norm: str = "LayerNormalization", ffn: bool = False, residual: bool = False,
           seed: int = 0) -> onnx.ModelProto:
    """``x + pos -> norm (gamma with outlier channels) -> q, k, v MatMuls``; ``ffn`` adds a
    ``MatMul + b -> Relu -> MatMul`` on the same norm; ``residual`` makes the norm's output
    also feed a residual Add (post-norm)."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(C, np.float32)
    gamma[OUTLIERS] = 30.0

    def const(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    inits = [const("pos", rng.normal(0, 0.5, (T, C))), const("gamma", gamma),
             const("beta", rng.normal(0, 0.1, C))]
    weights = rng.normal(0, 0.125, (3, C, N))
    weights[:, OUTLIERS] /= 30.0  # as trained models do: outlier channels carry no more signal
    inits += [const(w, weights[i]) for i, w in enumerate(("wq", "wk", "wv"))]
    outputs = ["q", "k", "v"]
    if norm == "SkipLayerNormalization":
        nodes = [helper.make_node(norm, ["x", "skip", "gamma", "beta"], ["y", "", "", "sum"],
                                  domain="com.microsoft", epsilon=1e-5)]
        outputs.append("sum")
    else:
        nodes = [helper.make_node("Add", ["x", "pos"], ["r"]),
                 helper.make_node(norm, ["r", "gamma", "beta"], ["y"], axis=-1)]
    nodes += [helper.make_node("MatMul", ["y", w], [o]) for w, o in zip(("wq", "wk", "wv"), "qkv")]
    if ffn:
        inits += [const("w1", rng.normal(0, 0.125, (C, 2 * C))),
                  const("b1", rng.normal(0, 1, 2 * C)), const("w2", rng.normal(0, 0.1, (2 * C, C)))]
        nodes += [helper.make_node("MatMul", ["y", "w1"], ["h0"]),
                  helper.make_node("Add", ["h0", "b1"], ["h1"]),
                  helper.make_node("Relu", ["h1"], ["h"]),
                  helper.make_node("MatMul", ["h", "w2"], ["f"])]
        outputs.append("f")
    if residual:
        nodes.append(helper.make_node("Add", ["y", "r"], ["next"]))
        outputs.append("next")
    inputs = ["x"] + (["skip"] if norm == "SkipLayerNormalization" else [])
    graph = helper.make_graph(
        nodes, "block",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["batch", T, C]) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", T, N if o in "qkv" else C])
         for o in outputs], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _gemm_mlp() -> onnx.ModelProto:
    """``x [B, C] -> LayerNorm -> Gemm(transB=1) -> Relu -> Gemm(transB=0)``, biases on both."""
    rng = np.random.default_rng(0)
    gamma = np.ones(C, np.float32)
    gamma[OUTLIERS] = 30.0
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), name) for name, a in [
        ("gamma", gamma), ("beta", rng.normal(0, 0.1, C)), ("w1", rng.normal(0, 0.1, (N, C))),
        ("b1", rng.normal(0, 1, N)), ("w2", rng.normal(0, 0.1, (N, C))), ("b2", np.zeros(C))]]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"]),
             helper.make_node("Gemm", ["y", "w1", "b1"], ["h0"], transB=1),
             helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["out"], alpha=0.5)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", C])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _batches(model: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = [i.name for i in model.graph.input]
    return [{n: rng.standard_normal((4, T, C)).astype(np.float32) for n in names}
            for _ in range(count)]


@pytest.mark.parametrize("norm", ["LayerNormalization", "SkipLayerNormalization"])
def test_toy_block_is_exact_and_smooths_all_readers(norm: str) -> None:
    model = _block(norm)
    report = _smooth_is_exact(model, _batches(model, 4, 0), _batches(model, 1, 1)[0])
    stats = report.passes[-1].stats
    assert stats["smoothed"] == 1 and stats["consumers"] == 3, stats
    assert stats["max_scale"] > 5 * stats["min_scale"]  # the outlier channels stand out


def test_relu_ffn_second_linear_is_smoothed() -> None:
    model = _block(ffn=True)
    report = _smooth_is_exact(model, _batches(model, 4, 0), _batches(model, 1, 1)[0])
    stats = report.passes[-1].stats
    assert stats["smoothed"] == 2 and stats["consumers"] == 5, stats  # q, k, v, w1; then w2


def test_gemm_readers_and_producer_are_exact() -> None:
    model = _gemm_mlp()
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((8, C)).astype(np.float32)} for _ in range(3)]
    report = _smooth_is_exact(model, data, data[0])
    stats = report.passes[-1].stats
    assert stats["smoothed"] == 2 and stats["consumers"] == 2, stats


def test_outliers_quantize_better_after_smooth() -> None:
    model = _block()
    calibration, feeds = _batches(model, 8, 0), _batches(model, 1, 1)[0]
    expected = _run(onnxpress.compile(model, [Cleanup()]), feeds)

    def error(passes: list) -> float:
        actual = _run(onnxpress.compile(model, passes, calibration=calibration), feeds)
        return max(float(np.linalg.norm(actual[k] - expected[k]) / np.linalg.norm(expected[k]))
                   for k in expected)

    plain = error([Cleanup(), Quantize()])
    smoothed = error([Cleanup(), Smooth(), Quantize()])
    assert smoothed < 0.25 * plain, (plain, smoothed)  # measured: 0.22 -> 0.018


def test_post_norm_residual_reader_is_skipped() -> None:
    model = _block(residual=True)
    smoothed, report = onnxpress.compile(model, [Cleanup(), Smooth()],
                                         calibration=_batches(model, 2, 0), return_report=True)
    record = report.passes[-1]
    assert record.stats["smoothed"] == 0 and record.stats["skipped"] == 1
    assert not record.modified
    assert any("also feeds Add" in n and "residual" in n for n in record.notes), record.notes
    gamma = next(v for v in smoothed.graph.initializers.values() if v.name == "gamma")
    assert gamma.const_value.numpy()[OUTLIERS[0]] == 30.0


def test_missing_data_is_a_one_line_error() -> None:
    with pytest.raises(BadInputError, match="--calibration"):
        onnxpress.compile(_block(), [Smooth()])


# --------------------------------------------------------------------------- real exports


def test_digits_vit_is_exact() -> None:
    images = np.load(MODELS / "digits_test.npz")["image"][:64]
    report = _smooth_is_exact(MODELS / "digits_vit.onnx", CALIBRATION_NPZ, {"image": images})
    record = report.passes[-1]
    # 6 blocks x (norm1 -> qkv, norm2 -> fc1) + final norm -> class token Gather -> head Gemm
    assert record.stats["smoothed"] == 13 and record.stats["consumers"] == 13, record.stats
    assert any("Mul x6" in n for n in record.notes), record.notes  # fc2 after GELU: skipped


def test_vit_32_is_exact(tmp_path: Path) -> None:
    from onnxpress.models import zoo

    path = zoo.get("vit_32").export(tmp_path / "vit_32.onnx")
    rng = np.random.default_rng(0)
    data = [{"pixel_values": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
            for _ in range(3)]
    report = _smooth_is_exact(path, data, data[0])
    assert report.passes[-1].stats["smoothed"] == 13


def test_digits_vit_accuracy_after_smooth_and_quantize(tmp_path: Path) -> None:
    model = onnxpress.compile(MODELS / "digits_vit.onnx", [Cleanup(), Smooth(), Quantize()],
                              calibration=CALIBRATION_NPZ)
    out = tmp_path / "digits_vit_smooth_int8.onnx"
    onnxpress.save(model, out)
    assert onnxpress.evaluate(out, "digits").value >= 0.975
