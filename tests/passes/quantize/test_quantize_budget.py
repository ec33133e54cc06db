"""``quantize(budget=...)``: mixed precision by measured layer sensitivity.

The main model is an MLP with one deliberately fragile layer: ``fc1`` gives channel 5 of its
output a range 1000x the others' (``fc2`` divides it back, so fp32 is unchanged), and per
tensor uint8 quantization of ``fc2``'s input then rounds every other channel to zero.
``side`` reads the same activation but only channel 5, so it quantizes well: the budget must
keep ``fc2`` in float and nothing else, while ``side`` still reads a quantized input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import inference_session
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ
from onnxpress.passes.pipeline import format_pipeline, parse_pipeline
from onnxpress.passes.quantize.static.quantize import Quantize
from onnxpress.passes.quantize.static.sensitivity import fewest_float

MODELS = Path(onnxpress.models.__file__).parent
OUTLIER = 5


def _fragile_mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) / 4
    b1 = np.abs(rng.standard_normal(32)).astype(np.float32)
    w1[:, OUTLIER] *= 1000
    b1[OUTLIER] = 1000.0  # keeps the outlier channel above the Relu
    w2 = rng.standard_normal((32, 32)).astype(np.float32) / 32**0.5
    w2[OUTLIER] /= 1000
    w3 = rng.standard_normal((32, 8)).astype(np.float32) / 32**0.5
    b3 = rng.standard_normal(8).astype(np.float32) / 10
    ws = np.zeros((32, 8), np.float32)
    ws[OUTLIER] = rng.standard_normal(8).astype(np.float32) / 1000
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["h3"], name="fc3"),
        helper.make_node("MatMul", ["a1", "ws"], ["s"], name="side"),
        helper.make_node("Add", ["h3", "s"], ["y"], name="join"),
    ]
    inits = [numpy_helper.from_array(a, n)
             for n, a in [("w1", w1), ("b1", b1), ("w2", w2), ("w3", w3), ("b3", b3), ("ws", ws)]]
    graph = helper.make_graph(
        nodes, "fragile_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # as exporters give
    onnx.checker.check_model(model, full_check=True)
    return model


def _batches(seed: int, count: int, size: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((size, 16)).astype(np.float32)} for _ in range(count)]


def _mean_cosine(original: onnx.ModelProto, candidate: Path, x: np.ndarray) -> float:
    """Independent of the pass: ONNX Runtime on the original file as the reference."""
    # exact int8 on CPUs without VNNI too
    want = inference_session(original.SerializeToString()).run(None, {"x": x})[0]
    got = inference_session(str(candidate)).run(None, {"x": x})[0]
    cosines = np.sum(want * got, 1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return float(cosines.mean())


def _consumers_reading_dq(path: Path) -> dict[str, list[str]]:
    """Node name -> the inputs it reads from a DequantizeLinear."""
    graph = onnx.load(path).graph
    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: [i for i in n.input if i in dq] for n in graph.node}


@pytest.fixture(scope="module")
def fragile() -> onnx.ModelProto:
    return _fragile_mlp()


def _quantize(model: onnx.ModelProto, tmp_path: Path, passes, calibration):
    out, report = onnxpress.compile(model, passes, calibration=calibration, return_report=True)
    path = tmp_path / "quantized.onnx"
    onnxpress.save(out, path)
    onnx.checker.check_model(str(path), full_check=True)
    return path, report.passes[-1]


def test_budget_keeps_exactly_the_fragile_layer_in_float(
    fragile: onnx.ModelProto, tmp_path: Path
) -> None:
    def one_shot() -> Iterator[dict[str, np.ndarray]]:  # read once: the pass must cope
        yield from _batches(seed=1, count=8)

    path, record = _quantize(fragile, tmp_path, "quantize(budget=0.005)", one_shot())
    stats = record.stats
    assert (stats["float_layers"], stats["quantized_layers"]) == (1, 3), stats
    layers = {layer["name"]: layer for layer in stats["layers"]}
    assert [name for name, layer in layers.items() if layer["float"]] == ["fc2"]
    assert max(layers, key=lambda name: layers[name]["sensitivity"]) == "fc2"
    assert layers["fc2"]["sensitivity"] > 10 * max(
        layer["sensitivity"] for name, layer in layers.items() if name != "fc2")
    assert any(note.startswith("kept in float: 'fc2' (sensitivity") for note in record.notes)
    assert stats["final_error"] <= 0.005 < stats["all_quantized_error"]
    # the float simulation behind the choice predicts the rewritten model
    assert stats["final_error"] == pytest.approx(stats["simulated_error"], rel=0.1, abs=1e-5)

    reading = _consumers_reading_dq(path)
    assert reading["fc2"] == []  # float activation and float weight
    assert reading["side"] and reading["fc1"] and reading["fc3"]  # the shared a1 is quantized
    held_out = _batches(seed=2, count=1, size=512)[0]["x"]
    assert _mean_cosine(fragile, path, held_out) >= 0.995


def test_without_budget_the_fragile_layer_is_quantized(
    fragile: onnx.ModelProto, tmp_path: Path
) -> None:
    path, record = _quantize(fragile, tmp_path, "quantize", _batches(seed=1, count=8))
    assert "float_layers" not in record.stats and record.stats["nodes"] == 4
    assert len(_consumers_reading_dq(path)["fc2"]) == 2  # activation and weight
    held_out = _batches(seed=2, count=1, size=512)[0]["x"]
    assert _mean_cosine(fragile, path, held_out) < 0.95


def test_budget_zero_keeps_every_layer_in_float(fragile: onnx.ModelProto, tmp_path: Path) -> None:
    path, record = _quantize(fragile, tmp_path, [Quantize(budget=0.0, sensitivity_batches=1)],
                             _batches(seed=1, count=2))
    assert record.stats["float_layers"] == 4 and record.stats["final_error"] == 0.0
    assert any("only with every layer in float" in note for note in record.notes)
    assert not any("not met" in note for note in record.notes)
    assert not any(n.op_type == "QuantizeLinear" for n in onnx.load(path).graph.node)


def test_fewest_float_layers_for_additive_errors() -> None:
    """Errors that add up per quantized layer: the fewest float layers are the largest."""
    share = [0.5, 0.1, 0.3, 0.05, 0.2]
    order = sorted(range(len(share)), key=lambda i: -share[i])

    def error(kept: frozenset[int]) -> float:
        return sum(e for i, e in enumerate(share) if i not in kept)

    assert fewest_float(order, error, 0.3) == {0, 2, 4}
    assert fewest_float(order, error, 0.7) == {0}
    assert fewest_float(order, error, 2.0) == set()
    assert fewest_float(order, error, 0.0) == set(range(5))


def test_budget_options_in_pipeline_strings() -> None:
    (parsed,) = parse_pipeline("quantize(budget=0.5%,sensitivity_batches=2)")
    assert parsed.budget == pytest.approx(0.005) and parsed.sensitivity_batches == 2
    assert format_pipeline([Quantize(budget=0.005)]) == "quantize(budget=0.005)"
    assert parse_pipeline("quantize(budget=none)")[0].budget is None
    for bad in ("quantize(budget=-0.1)", "quantize(budget=lots)", "quantize(budget=nan)"):
        with pytest.raises(BadInputError, match="budget"):
            parse_pipeline(bad)


def test_digits_vit_within_budget_keeps_its_accuracy(tmp_path: Path) -> None:
    model, report = onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup,quantize(budget=0.001)",
                                      calibration=CALIBRATION_NPZ, return_report=True)
    path = tmp_path / "digits_vit_mixed.onnx"
    onnxpress.save(model, path)
    stats = report.passes[-1].stats
    assert stats["final_error"] <= 0.001 and stats["quantized_layers"] > 0
    assert onnxpress.evaluate(path, "digits").value >= 0.975
