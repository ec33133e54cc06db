"""Calibration observers against numpy on the concatenated data, the streaming histogram's
independence of batch boundaries, and ``collect`` on a small model."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import count_nodes
from onnxpress.ir.quant_math import dequantize, params_from_range, quantize
from onnxpress.passes.quantize.calibrate.calibration import (
    OBSERVERS,
    Entropy,
    MinMax,
    Mse,
    Observer,
    Percentile,
    collect,
)
from onnxpress.passes.quantize.calibrate.histogram import StreamingHistogram


def _feed(observer: Observer, x: np.ndarray, parts: int, axis: int = 0) -> Observer:
    for part in np.array_split(x, parts, axis=axis):
        observer.update(part)
    return observer


def _range(observer: Observer) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = observer.range()
    return np.asarray(lo), np.asarray(hi)


def _sample(seed: int = 0, size: int = 60_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(np.float32) * np.float32(0.7) + np.float32(0.2)
    x[:500] = 0.0
    return x


@pytest.mark.parametrize("parts", [1, 7])
def test_minmax_per_tensor_and_per_channel_are_exact(parts: int):
    x = np.random.default_rng(1).standard_normal((12, 5, 9)).astype(np.float32)
    x[3, 2, 4] = np.inf  # skipped
    x[4, 1, 1] = np.nan
    finite = np.where(np.isfinite(x), x, np.nan)
    lo, hi = _range(_feed(MinMax(), x, parts))
    assert lo == np.nanmin(finite) and hi == np.nanmax(finite)
    lo, hi = _range(_feed(MinMax(axis=-1), x, parts))
    np.testing.assert_array_equal(lo, np.nanmin(finite, axis=(0, 1)))
    np.testing.assert_array_equal(hi, np.nanmax(finite, axis=(0, 1)))
    lo, hi = _range(_feed(MinMax(axis=1), x, parts))
    np.testing.assert_array_equal(hi, np.nanmax(finite, axis=(0, 2)))
    assert lo.shape == (5,)


def test_unfed_observers_report_zero_range():
    for observer in [MinMax(), *(factory() for factory in OBSERVERS.values())]:
        assert tuple(map(float, observer.range())) == (0.0, 0.0)
    only_zeros = _feed(Entropy(), np.zeros(100, np.float32), 3)
    assert tuple(map(float, only_zeros.range())) == (0.0, 0.0)


def test_histogram_counts_equal_numpy_and_ignore_batch_boundaries():
    x = np.concatenate([_sample(), np.float32([30.0, -2.0])])
    whole = StreamingHistogram()
    whole.update(x)
    counts, start, width = whole.signed()
    edges = start + width * np.arange(counts.size + 1)
    np.testing.assert_array_equal(counts, np.histogram(x, edges)[0])
    assert whole.zeros == 500 and whole.total == x.size
    for order in (x, x[::-1], np.sort(x), np.abs(x)):
        split = StreamingHistogram()
        for part in np.array_split(order, 23):
            split.update(part)
        reference = StreamingHistogram()
        reference.update(order)
        assert split.width == reference.width
        for got, want in zip(split.signed(), reference.signed()):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("factory", [Percentile, Entropy, Mse], ids=lambda f: f.__name__)
def test_histogram_observers_do_not_depend_on_batching(factory):
    x = np.concatenate([_sample(2), np.float32([9.0, -6.0])])
    one = _range(_feed(factory(), x, 1))
    many = _range(_feed(factory(), np.random.default_rng(3).permutation(x), 31))
    assert one == many


@pytest.mark.parametrize("percentile", [99.0, 99.9, 99.999])
def test_percentile_is_within_one_bin_of_numpy(percentile: float):
    x = _sample(4)
    observer = _feed(Percentile(percentile), x, 9)
    cut = (100 - percentile) / 2
    # the histogram's quantile lies in the bin of the order statistic ceil(q * n), which is
    # numpy's "inverted_cdf" percentile (the default "linear" one interpolates between
    # order statistics, which in a sparse tail can be many bins apart)
    want = np.percentile(x, [cut, 100 - cut], method="inverted_cdf")
    np.testing.assert_allclose(_range(observer), want, atol=observer.histogram.width, rtol=0)


def test_entropy_clips_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:4] = [400.0, -350.0, 300.0, 420.0]
    lo, hi = _range(_feed(Entropy(), x, 10))
    absmax = np.abs(x).max()
    assert lo == -hi  # symmetric data: the threshold clips both sides
    assert np.percentile(np.abs(x), 99) < hi < absmax / 4


def test_entropy_keeps_one_sided_data_one_sided():
    x = np.maximum(_sample(6), 0)  # more than half exact zeros: they must not pull T down
    lo, hi = _range(_feed(Entropy(), x, 4))
    assert lo == 0 and np.percentile(x, 99.9) < hi <= x.max()


def _quantization_mse(x: np.ndarray, lo: float, hi: float) -> float:
    p = params_from_range(lo, hi, dtype="uint8", symmetric=False)
    return float(np.mean((dequantize(quantize(x, p), p) - x).astype(np.float64) ** 2))


def test_mse_clip_beats_minmax_and_scaled_clips_on_laplace():
    x = np.random.default_rng(7).laplace(0.0, 1.0, 1_000_000).astype(np.float32)
    lo, hi = map(float, _range(_feed(Mse(), x, 8)))
    best = _quantization_mse(x, lo, hi)
    assert best < _quantization_mse(x, float(x.min()), float(x.max()))
    for factor in (2.0, 0.5):
        assert best < _quantization_mse(x, lo * factor, hi * factor)


def test_symmetric_mse_models_int8_steps():
    x = np.random.default_rng(8).laplace(0.0, 1.0, 200_000).astype(np.float32)
    asymmetric = _range(_feed(Mse(), x, 2))
    symmetric = _range(_feed(Mse(symmetric=True), x, 2))
    assert symmetric[1] < asymmetric[1] * 1.1 and symmetric[1] > asymmetric[1] * 0.7


# --- collect() -------------------------------------------------------------------------------


def _mlp(seed: int = 0):
    """x[B,4] -> MatMul w1 -> h -> Relu -> r -> MatMul w2 -> y[B,3] (w1, w2 initializers)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 6)).astype(np.float32)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return onnxpress.load(proto), w1, w2


def _batches(count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((5, 4)).astype(np.float32)} for _ in range(count)]


def test_collect_matches_numpy_and_leaves_the_model_alone():
    model, w1, w2 = _mlp()
    nodes, outputs = count_nodes(model), [v.name for v in model.graph.outputs]
    data = _batches(6)
    observers = collect(model, ["x", "h", "r", "y", "w1"], data, per_channel={"r": -1},
                        progress=False)
    x = np.concatenate([b["x"] for b in data])
    h = x @ w1
    r = np.maximum(h, 0)
    expected = {"x": x, "h": h, "y": r @ w2, "w1": w1}
    assert list(observers) == ["x", "h", "r", "y", "w1"]
    for name, array in expected.items():
        lo, hi = observers[name].range()
        np.testing.assert_allclose([lo, hi], [array.min(), array.max()], rtol=1e-5, atol=1e-6)
    lo, hi = observers["r"].range()
    np.testing.assert_allclose(hi, r.max(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(lo, r.min(axis=0))
    assert count_nodes(model) == nodes and [v.name for v in model.graph.outputs] == outputs


def test_collect_uses_the_named_method_and_max_batches():
    model, w1, _ = _mlp()
    data = iter(_batches(10))
    observers = collect(model, ["h"], data, method="entropy", max_batches=3, progress=False)
    assert isinstance(observers["h"], Entropy)
    assert observers["h"].histogram.total == 3 * 5 * 6
    assert len(list(data)) == 7  # the rest of the stream was not read
    custom = collect(model, ["h"], _batches(2), method=lambda: Mse(symmetric=True))
    assert isinstance(custom["h"], Mse) and custom["h"].symmetric


def test_collect_reads_calibration_data_files(tmp_path):
    model, w1, _ = _mlp()
    x = np.random.default_rng(9).standard_normal((7, 4)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    data = onnxpress.CalibrationData(tmp_path / "calib.npz", batch_size=3)
    lo, hi = collect(model, ["h"], data)["h"].range()
    np.testing.assert_allclose([lo, hi], [(x @ w1).min(), (x @ w1).max()], rtol=1e-5)


@pytest.mark.parametrize("values, data, method, message", [
    (["h"], [{"y": np.zeros((1, 4), np.float32)}], "minmax", r"no 'x' \(it gives y\)"),
    (["h"], [], "minmax", "holds no batches"),
    (["nope"], _batches(1), "minmax", "'nope' is not a value"),
    (["h"], _batches(1), "kl", "unknown calibration method 'kl'"),
    (["h"], [{"x": np.zeros((1, 5), np.float32)}], "minmax", "batch 0: ONNX Runtime"),
])
def test_collect_bad_input(values, data, method, message):
    model, _, _ = _mlp()
    with pytest.raises(BadInputError, match=message) as error:
        collect(model, values, data, method=method)
    assert "\n" not in str(error.value)
