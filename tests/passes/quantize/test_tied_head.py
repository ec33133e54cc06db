"""A tied LM head (``MatMul(x, Transpose(table))`` beside ``Gather(table, ids)``) under
``quantize``: the table stored once in the head's layout (exact), the head quantized as a
weight, and the lookups reading that same int8 copy, smoothed or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.ir import quant_math
from onnxpress.passes.quantize.static.tied_head import untie_heads
from tests.passes.tiny_llama import cleaned_tiny_llama

V, H = 300, 32


def _tied(tmp_path: Path, loud: float = 1.0) -> tuple[Path, np.ndarray]:
    """``e = Gather(T, ids) + x`` (an output: the lookup, seen exactly) and
    ``logits = MatMul(e * g, Transpose(T))``; ``loud`` scales one channel of ``g``, an
    outlier for migration to flatten."""
    rng = np.random.default_rng(5)
    table = rng.normal(0, 1, (V, H)).astype(np.float32)
    gain = np.ones(H, np.float32)
    gain[3] = loud
    nodes = [helper.make_node("Gather", ["T", "ids"], ["rows"]),
             helper.make_node("Add", ["rows", "x"], ["e"]),
             helper.make_node("Mul", ["e", "g"], ["h"]),
             helper.make_node("Transpose", ["T"], ["Tt"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Tt"], ["logits"], name="head")]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 6]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6, H])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["b", 6, H]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 6, V])],
        [numpy_helper.from_array(table, "T"), numpy_helper.from_array(gain, "g")])
    path = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    return path, table


def _feeds(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(0, V, (4, 6)),
             "x": rng.normal(0, 0.1, (4, 6, H)).astype(np.float32)} for _ in range(count)]


def test_untying_stores_the_table_once_in_the_heads_layout_and_is_exact(tmp_path: Path) -> None:
    path, table = _tied(tmp_path)
    model = onnxpress.load(path)
    assert untie_heads(model.graph) == 1
    assert [v.name for v in model.graph.initializers.values()
            if v.const_value is not None and v.const_value.size == V * H] == ["T_head"]
    assert [n.op_type for n in model.graph].count("Transpose") == 1  # the lookup's, [b, 6, H]
    out = tmp_path / "untied.onnx"
    onnxpress.save(model, out)
    for feed in _feeds(0, 2):
        before, after = Runner(str(path)).run(feed), Runner(str(out)).run(feed)
        for name in ("e", "logits"):
            np.testing.assert_array_equal(after[name], before[name])


@pytest.mark.parametrize("smooth", [0.0, 0.5])
def test_the_quantized_head_and_its_lookups_share_one_int8_table(tmp_path: Path,
                                                                  smooth: float) -> None:
    path, table = _tied(tmp_path, loud=40.0)
    model, report = onnxpress.compile(path, f"quantize(smooth={smooth}),fold-qdq",
                                      calibration=_feeds(1, 4), return_report=True)
    stats = report.passes[0].stats
    assert stats["tied_heads"] == 1 and stats["embeddings"] == 0  # nothing quantized twice
    assert (stats["smoothed"] > 0) == (smooth > 0)
    out = tmp_path / "q.onnx"
    onnxpress.save(model, out)
    proto = onnx.load(out)
    big = [(i.name, i.data_type) for i in proto.graph.initializer if np.prod(i.dims) == V * H]
    assert big == [("T_head_quantized", TensorProto.INT8)]
    # the lookup: each element within half the int8 step of its (smoothed) row, the
    # channel's factor taken back: |T s|_max / 127 / (2 s_k)
    undo = [numpy_helper.to_array(i).ravel() for i in proto.graph.initializer
            if i.name == "T_head_unsmoothed"]
    assert len(undo) == (smooth > 0)
    factors = 1 / undo[0] if undo else np.ones(H, np.float32)
    assert factors.max() / factors.min() > (2 if smooth else 0.99)  # channel 3 is loud
    feed = _feeds(1, 1)[0]  # a calibration batch: no activation beyond its range
    reference, got = Runner(str(path)).run(feed), Runner(str(out)).run(feed)
    half_step = np.abs(table * factors).max(axis=1)[:, None] / 127 / (2 * factors)
    bound = half_step[feed["ids"]] * 1.01 + 1e-6
    assert np.all(np.abs(got["e"] - reference["e"]) <= bound)
    # the head: int8 against fp32 on the logits
    logits, exact = got["logits"], reference["logits"]
    assert np.abs(logits - exact).max() <= 0.05 * np.abs(exact).max()
    assert not np.array_equal(logits, exact)


def test_an_unsmoothed_lookup_equals_the_int8_rows(tmp_path: Path) -> None:
    path, table = _tied(tmp_path)
    model = onnxpress.compile(path, "quantize(smooth=0),fold-qdq", calibration=_feeds(1, 2))
    out = tmp_path / "q.onnx"
    onnxpress.save(model, out)
    p = quant_math.weight_params(table, axis=0, dtype="int8", symmetric=True)
    rows = quant_math.dequantize(quant_math.quantize(table, p), p)
    feed = _feeds(3, 1)[0]
    np.testing.assert_allclose(Runner(str(out)).run(feed)["e"],
                               rows[feed["ids"]] + feed["x"], rtol=1e-6, atol=1e-6)


def test_int8_preset_on_a_tied_llama_keeps_one_table_and_quantizes_its_head(
        tmp_path: Path) -> None:
    source, batches = cleaned_tiny_llama(tmp_path)
    model, report = onnxpress.compile(source, "int8", calibration=batches,
                                      return_report=True)
    out = tmp_path / "int8.onnx"
    onnxpress.save(model, out)
    quantize = next(p for p in report.passes if p.name == "quantize")
    assert quantize.stats["tied_heads"] == 1
    tables = [(list(i.dims), i.data_type) for i in onnx.load(out).graph.initializer
              if np.prod(i.dims) == 256 * 64]
    assert tables == [([64, 256], TensorProto.INT8)]  # no float table, no second copy
    for batch in batches:
        exact, got = Runner(str(source)).run(batch), Runner(str(out)).run(batch)
        logits, reference = got["logits"], exact["logits"]
        assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
        assert (logits.argmax(-1) == reference.argmax(-1)).mean() >= 0.9


def test_a_head_whose_table_has_other_readers_stays_float_and_says_why(tmp_path: Path) -> None:
    path, _ = _tied(tmp_path)
    proto = onnx.load(path)
    proto.graph.node.append(helper.make_node("ReduceSum", ["T"], ["total"], keepdims=0))
    proto.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, None))
    onnx.save(proto, path)
    _, report = onnxpress.compile(path, "quantize", calibration=_feeds(1, 2),
                                  return_report=True)
    quantize = report.passes[0]
    assert quantize.stats["tied_heads"] == 0
    assert any("a Transpose of the constant 'T'" in note for note in quantize.notes)


def test_a_head_kept_float_keeps_its_lookups_on_the_one_float_table(tmp_path: Path) -> None:
    path, table = _tied(tmp_path)
    model, report = onnxpress.compile(path, "quantize(exclude=head)",
                                      calibration=_feeds(1, 2), return_report=True)
    assert report.passes[0].stats["embeddings"] == 0
    out = tmp_path / "q.onnx"
    onnxpress.save(model, out)
    assert [(i.name, i.data_type) for i in onnx.load(out).graph.initializer
            if np.prod(i.dims) == V * H] == [("T_head", TensorProto.FLOAT)]
    feed = _feeds(3, 1)[0]
    np.testing.assert_array_equal(Runner(str(out)).run(feed)["e"],
                                  Runner(str(path)).run(feed)["e"])
