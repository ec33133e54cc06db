"""int8 for transformers on ONNX Runtime CPU: fused attention quantized into QAttention,
SmoothQuant migration inside ``quantize``, float residual streams, and the ``int8`` preset
judged on real MiniLM against its fp32 embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.models.digits_data import CALIBRATION_NPZ
from onnxpress.passes.pipeline import split_pipeline
from onnxpress.passes.registry import PRESETS

MODELS = Path(onnxpress.models.__file__).parent
QDQ = "cleanup,fuse-for-ort,quantize,fold-qdq"
# The int8 preset with its lowering pinned: form=auto keeps whichever form measures faster
# on the machine, and what a test asserts must not hang on that machine's load.
INT8 = PRESETS["int8"][1]["ort-cpu"].replace("form=auto", "form=qoperator")
assert "form=qoperator" in INT8, INT8


def _ops(path: Path) -> dict[str, int]:
    """Op counts by type, the domain dropped (``com.microsoft::QAttention`` -> QAttention)."""
    return {op.split("::")[-1]: n for op, n in onnxpress.inspect(path)["ops"].items()}


def _compiled(source, pipeline: str, out: Path, calibration=CALIBRATION_NPZ):
    model, report = onnxpress.compile(source, pipeline, calibration=calibration,
                                      return_report=True)
    onnxpress.save(model, out)
    return out, report


def test_fused_attention_is_quantized_and_lowered_to_qattention(tmp_path: Path) -> None:
    vit = MODELS / "digits_vit.onnx"
    qdq, _ = _compiled(vit, QDQ, tmp_path / "qdq.onnx")
    lowered, report = _compiled(vit, f"{QDQ},lower-qdq(ops=Attention)", tmp_path / "low.onnx")
    ops = _ops(lowered)
    assert ops.get("QAttention") == 6 and "Attention" not in ops  # depth 6
    assert report.passes[-1].stats["QAttention"] == 6
    # the QDQ form already stores the packed Q/K/V weight as int8, read through a DQ
    graph = onnx.load(qdq).graph
    producers = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.op_type == "Attention"):
        assert producers[node.input[0]].op_type == "DequantizeLinear"
        assert producers[node.input[1]].op_type == "DequantizeLinear"
    # QAttention computes the same integer products: float rounding apart, equal
    feeds = dict(np.load(CALIBRATION_NPZ))
    a = Runner(str(qdq)).run(feeds)
    b = Runner(str(lowered)).run(feeds)
    for name in a:
        # a rounding difference in one layer may flip a later requantization by one step
        scale = np.abs(a[name]).max()
        assert np.abs(a[name] - b[name]).max() <= 1e-2 * scale
        assert np.median(np.abs(a[name] - b[name])) <= 1e-5 * scale
        assert (a[name].argmax(-1) == b[name].argmax(-1)).mean() >= 0.99


def test_int8_preset_keeps_digits_accuracy_with_fused_attention(tmp_path: Path) -> None:
    vit = MODELS / "digits_vit.onnx"
    out, report = _compiled(vit, INT8, tmp_path / "int8.onnx")
    assert [p.name for p in report.passes] == ["cleanup", "fuse-for-ort", "quantize",
                                               "fold-qdq", "lower-qdq"]
    assert _ops(out).get("QAttention") == 6
    before = onnxpress.evaluate(vit, "digits").value
    assert onnxpress.evaluate(out, "digits").value >= before - 0.003


def test_minilm_int8_preset_meets_the_embedding_budget(minilm_path: Path,
                                                      tmp_path: Path) -> None:
    """The issue's MiniLM bar: mean cosine >= 0.995 and Spearman >= 0.99 against fp32 on
    the 300-sentence text set (measured 0.9958 and 0.998)."""
    from onnxpress.models.datasets import load_dataset

    data = load_dataset("minilm-texts")
    batches = [dict(b) for b, _ in zip(data.batches(16), range(8))]
    out, report = _compiled(minilm_path, INT8, tmp_path / "minilm_int8.onnx", batches)
    ops = _ops(out)
    assert ops.get("QAttention") == 6 and ops.get("MatMulIntegerToFloat") == 18
    assert "MatMul" not in ops  # every projection runs in integers
    quantize = next(p for p in report.passes if p.name == "quantize")
    assert quantize.stats["smoothed"] > 0 and quantize.stats["embeddings"] == 2  # words, positions
    assert out.stat().st_size <= 0.27 * minilm_path.stat().st_size  # int8 word embeddings
    metrics = onnxpress.evaluate(out, "minilm-texts").metrics
    assert metrics["mean_cosine"] >= 0.995 and metrics["spearman"] >= 0.99, metrics
    # without migration the same pipeline misses the cosine bar: the smoothing is load-bearing
    plain, _ = _compiled(minilm_path, "cleanup,fuse-for-ort,quantize,fold-qdq,lower-qdq",
                         tmp_path / "plain.onnx", batches)
    assert onnxpress.evaluate(plain, "minilm-texts").metrics["mean_cosine"] < metrics[
        "mean_cosine"]


# ----------------------------------------------------------- migration on a toy post-norm block

K, N = 16, 24


def _post_norm_block(tmp_path: Path, *, residual: bool) -> Path:
    """LayerNorm with two outlier channels (gamma 40) -> MatMul, the LN output also added to
    the MatMul's input path when ``residual`` (post-norm BERT's shape)."""
    rng = np.random.default_rng(0)
    gamma = np.ones(K, np.float32)
    gamma[[3, 11]] = 40.0
    inits = [numpy_helper.from_array(gamma, "gamma"),
             numpy_helper.from_array(rng.normal(0, 0.1, K).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(0, 0.2, (K, N)).astype(np.float32), "w")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "w"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if residual:
        nodes.append(helper.make_node("Add", ["ln", "x"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["b", 8, K])], outputs, inits)
    path = tmp_path / f"block_{residual}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    return path


def _data(seed: int, count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (4, 8, K)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("residual", [False, True])
def test_migration_lowers_the_error_and_keeps_the_residual_exact(residual: bool,
                                                                tmp_path: Path) -> None:
    path = _post_norm_block(tmp_path, residual=residual)
    reference = Runner(str(path))
    test = _data(seed=1)
    errors = {}
    for alpha in (0.0, 0.5):
        out, report = _compiled(path, f"quantize(smooth={alpha})", tmp_path / f"{alpha}.onnx",
                                _data(seed=0, count=16))
        runner = Runner(str(out))
        errors[alpha] = np.mean([np.abs(runner.run(f)["y"] - reference.run(f)["y"]).mean()
                                 for f in test])
        if residual:  # the Add reads the float LayerNorm output, not its int8 copy
            for feeds in test:
                assert np.array_equal(runner.run(feeds)["r"], reference.run(feeds)["r"])
        ops = _ops(out)
        if alpha:
            assert report.passes[-1].stats["smoothed"] == 1
            # folded into the LayerNorm when nothing else reads it, else one Mul
            assert ops.get("Mul", 0) == (1 if residual else 0)
    assert errors[0.5] < 0.8 * errors[0.0], errors  # measured ~0.6


def test_quoted_option_values_may_hold_commas() -> None:
    (spec,) = split_pipeline("quantize(ops='Conv,MatMul',exclude=\"a,b\",smooth=0.5)")
    assert spec.params == {"ops": "Conv,MatMul", "exclude": "a,b", "smooth": "0.5"}


def test_fused_attention_uses_a_mask_value_without_denormals(minilm_path: Path) -> None:
    from onnxpress.passes.ort_fusion import FuseForOrt

    def fill(**options) -> set[float]:
        model = onnxpress.load(minilm_path)
        FuseForOrt(**options)(model)
        return {n.attributes["mask_filter_value"].value for n in model.graph
                if n.op_type == "Attention"}

    assert fill() == {-50.0}
    assert fill(mask_value=None) == {float(np.finfo(np.float32).min)}  # the exporter's


def test_embedding_rows_are_int8_and_looked_up_exactly(tmp_path: Path) -> None:
    from onnxpress.ir import quant_math

    rng = np.random.default_rng(3)
    table = rng.normal(0, 1, (500, 32)).astype(np.float32)
    table[7] *= 100  # one loud row must not coarsen the others
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]),
         helper.make_node("MatMul", ["e", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(rng.normal(0, 1, (32, 8)).astype(np.float32), "w")])
    path = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    feeds = [{"ids": rng.integers(0, 500, (4, 5))} for _ in range(3)]
    out, report = _compiled(path, "quantize(ops=Conv)", tmp_path / "q.onnx", feeds)
    assert report.passes[-1].stats["embeddings"] == 1
    proto = onnx.load(out)
    assert [i.data_type for i in proto.graph.initializer if list(i.dims) == [500, 32]] == [
        TensorProto.INT8]
    p = quant_math.weight_params(table, axis=0, dtype="int8", symmetric=True)
    rows = quant_math.dequantize(quant_math.quantize(table, p), p)  # numpy reference
    ids = np.array([[7, 0, 499, 7, 3]])
    got = Runner(str(out)).run({"ids": ids})["y"]
    expected = rows[ids] @ numpy_helper.to_array(
        next(i for i in proto.graph.initializer if i.name == "w"))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(rows[0] - table[0]).max() <= np.abs(table[0]).max() / 254 + 1e-7


def _swiglu_block(tmp_path: Path) -> Path:
    """``Mul(a, b) -> MatMul``: a SwiGLU product, no LayerNorm to fold into (one Mul then)."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (K, N)).astype(np.float32), "w")
    nodes = [helper.make_node("Mul", ["a", "b"], ["h"]),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 8, K]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "swiglu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    return path


def _massive(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """One channel hundreds of times the rest on each sequence's first token only: an LLM's
    massive activation (SmolLM2's down projections), whose abs-max says nothing of its RMS."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        a = rng.normal(0, 1, (4, 8, K)).astype(np.float32)
        a[:, 0, 5] = 300.0
        batches.append({"a": a, "b": rng.uniform(0.8, 1.2, (4, 8, K)).astype(np.float32)})
    return batches


def test_the_migration_gate_measures_the_layer_error_on_sampled_rows(tmp_path: Path) -> None:
    """The gate's error is the readers' output error of the two round trips (numpy's own
    per-tensor uint8 and per-column int8 here), on the rows the calibration run sampled
    (the first token of every sequence among them); end to end, the migration it keeps
    lowers ONNX Runtime's error on held-out batches."""
    from onnxpress.ir import quant_math
    from onnxpress.passes.quantize.static.migration import RowSample, _measured

    sample = RowSample()
    for batch in _massive(0, 8):
        sample(batch["a"] * batch["b"])
    rows = sample.rows()
    assert rows is not None and len(rows) == 256 and np.sum(rows[:, 5] > 100) == 32
    w = np.random.default_rng(3).normal(0, 0.2, (K, N))
    lo, hi = rows.min(0).astype(np.float64), rows.max(0).astype(np.float64)
    factors = quant_math.smoothing_factors(np.maximum(-lo, hi), np.abs(w).max(1), 0.75)
    x = rows / factors
    step = (x.max() - min(x.min(), 0)) / 255
    zero = np.round(-min(x.min(), 0) / step)
    xq = (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
    moved = w * factors[:, None]
    wstep = np.abs(moved).max(0) / 127
    want = np.sum((rows @ w - xq @ (np.round(moved / wstep) * wstep)) ** 2)
    assert _measured(rows, lo, hi, [w], factors) == pytest.approx(want, rel=1e-3)

    path = _swiglu_block(tmp_path)
    reference, test = Runner(str(path)), _massive(1, 4)
    errors = {}
    for alpha in (0.0, 0.75):
        out, report = _compiled(path, f"quantize(smooth={alpha})", tmp_path / f"{alpha}.onnx",
                                _massive(0, 16))
        runner = Runner(str(out))
        errors[alpha] = np.mean([np.abs(runner.run(f)["y"] - reference.run(f)["y"]).mean()
                                 for f in test])
        if alpha:
            assert report.passes[-1].stats["smoothed"] == 1 and _ops(out).get("Mul") == 2
    assert errors[0.75] < 0.5 * errors[0.0], errors
