"""``fold-qdq`` on models that other tools quantized, as a user gets them:

- ONNX Runtime's ``quantize_static``: QDQ format, U8S8 per channel and per tensor, with float
  weights behind a Q/DQ pair (``AddQDQPairToWeight``) or int8 weights, and its defaults (int8
  activations and weights, per tensor); its QOperator format (QLinearConv, QGemm, ...),
  which fold-qdq must leave valid;
- PyTorch QAT: ``torch.ao.quantization.prepare_qat`` with ``FakeQuantize`` observers
  (reduced-range uint8, int8 affine, per-tensor weights), exported by TorchScript and by
  torch.export, which write fake-quant as Q -> DQ (with a Clip for the range (0, 127)).

Each case: outputs bit-identical to ONNX Runtime on the input model, for several seeded
inputs (real images, noise, values beyond the calibrated range), with graph optimisations
off and at ORT's default level; fewer QuantizeLinear nodes; a smaller file; ``onnx.checker``
and ``verify()``. One exception, asserted as such: with int8 activations (ORT's defaults)
the moves through Reshape and the like (``int8_moves=true``) are exact but change which
fusions ORT picks; the default, which leaves them, stays identical at ORT's default level.
The rewrites these exports needed (Identity-shared parameters, ``[1]`` scales, an integer
Clip after a weight's Q) are also tested alone on small graphs."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import inference_session
from onnxpress.passes.quantize.fold.fold_qdq import FoldQdq

MODELS = Path(onnxpress.models.__file__).parent
CALIBRATION = np.load(MODELS / "digits_calibration.npz")["image"][:64]
IMAGES = np.load(MODELS / "digits_test.npz")["image"]


BATCH = 16  # torch.export keeps fake-quant models to a static batch


def _inputs() -> list[np.ndarray]:
    """Real digits, seeded noise in the calibrated range [0, 1], and seeded values well
    beyond it (every Q saturates somewhere)."""
    rng = np.random.default_rng(7)
    shape = (BATCH, 1, 8, 8)
    return [IMAGES[:BATCH], IMAGES[-BATCH:],
            rng.random(shape, dtype=np.float32),
            (rng.standard_normal(shape) * 4).astype(np.float32)]


_LEVELS = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
           "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def _session(path: Path, level: str) -> ort.InferenceSession:
    def configure(options: ort.SessionOptions) -> None:
        options.graph_optimization_level = _LEVELS[level]

    return inference_session(str(path), configure)  # exact int8 on CPUs without VNNI too


def _reference(before: Path) -> ort.InferenceSession:
    """The input at ONNX Runtime's default level; at "basic" where it does not load there
    (TorchScript's ``[1]`` scales make ORT build a QLinearAdd it then rejects)."""
    try:
        return _session(before, "all")
    except ort.capi.onnxruntime_pybind11_state.Fail as error:
        assert "must be a scalar" in str(error)
        return _session(before, "basic")


def _assert_bit_identical(before: Path, after: Path, *, optimised: bool = True) -> None:
    """The folded model against the input, both unoptimised (our rewrite alone) and, with
    ``optimised``, both as a user runs them (ORT's QDQ fusions on top)."""
    pairs = {"unoptimised": lambda: (_session(before, "none"), _session(after, "none")),
             "default": lambda: (_reference(before), _session(after, "all"))}
    for label in ("unoptimised", "default") if optimised else ("unoptimised",):
        pair = pairs[label]()
        name = pair[0].get_inputs()[0].name
        for images in _inputs():
            expected, got = (session.run(None, {name: images}) for session in pair)
            for a, b in zip(expected, got, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert np.array_equal(a, b), f"{label}: max |a-b| = {np.abs(a - b).max()}"


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _fold(source: Path, target: Path, passes: str = "fold-qdq"):
    """``onnxpress.compile(source, passes)`` (verify() after the pass), saved and checked by
    the full ONNX checker; the pass's record (stats and notes)."""
    model, report = onnxpress.compile(source, passes, return_report=True)
    ir.external_data.load_to_model(model)  # else the writer keeps the input's .data file
    onnxpress.save(model, target)
    onnx.checker.check_model(str(target), full_check=True)
    (record,) = report.passes
    return record


def _file_size(path: Path) -> int:
    """The model file and the external data files it names (torch.export writes one)."""
    proto = onnx.load(str(path), load_external_data=False)
    names = {entry.value for tensor in proto.graph.initializer
             for entry in tensor.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in names)


def _round_trip(source: Path, target: Path) -> Path:
    """The input, loaded and saved unchanged: the size the writer alone gives it."""
    onnxpress.save(onnxpress.load(source), target)
    return target


# --------------------------------------------------------------------------- ONNX Runtime


def _ort_quantize(source: Path, target: Path, *, qoperator: bool = False,
                  per_channel: bool = False, u8s8: bool = False,
                  float_weights: bool = False) -> Path:
    """``quantize_static`` calibrated on 64 digits (MinMax): its defaults (in ORT 1.31 int8
    activations and weights, per tensor), or uint8 activations (``u8s8``)."""
    from onnxruntime import quantization as ortq

    class Digits(ortq.CalibrationDataReader):
        batches = iter([{"image": CALIBRATION[:32]}, {"image": CALIBRATION[32:]}])

        def get_next(self):
            return next(self.batches, None)

    fmt = ortq.QuantFormat.QOperator if qoperator else ortq.QuantFormat.QDQ
    options = {"activation_type": ortq.QuantType.QUInt8} if u8s8 else {}
    ortq.quantize_static(str(source), str(target), Digits(), quant_format=fmt,
                         per_channel=per_channel,
                         extra_options={"AddQDQPairToWeight": float_weights}, **options)
    return target


#: name -> (model, quantize_static options, weights folded, Q nodes removed at least,
#: pipeline); int8 activations (ORT's defaults) move only when asked
_ORT_CASES = {
    "cnn-u8s8-per-channel-float-weights": (
        "digits_cnn", {"per_channel": True, "u8s8": True, "float_weights": True}, 7, 9,
        "fold-qdq"),
    "cnn-u8s8-per-tensor-float-weights": ("digits_cnn", {"u8s8": True, "float_weights": True},
                                          7, 9, "fold-qdq"),
    "cnn-u8s8-per-tensor": ("digits_cnn", {"u8s8": True}, 0, 2, "fold-qdq"),
    "cnn-ort-defaults": ("digits_cnn", {}, 0, 2, "fold-qdq(int8_moves=true)"),
    # the ViT: U8S8 per channel with float weights in test_fold_qdq.py::test_ort_qdq_vit_folded,
    # ORT's defaults in test_ort_defaults_vit_int8_pairs_left_for_ort below
}


@pytest.mark.parametrize("case", sorted(_ORT_CASES))
def test_ort_static_qdq_folded_bit_identical(case, tmp_path):
    model, options, weights, fewer_q, passes = _ORT_CASES[case]
    source = _ort_quantize(MODELS / f"{model}.onnx", tmp_path / "qdq.onnx", **options)
    target = tmp_path / "folded.onnx"
    record = _fold(source, target, passes)
    assert record.stats["weights_folded"] == weights, record.stats
    assert record.stats["moved_through"] >= 2, record.stats
    before, after = _ops(source), _ops(target)
    assert after["QuantizeLinear"] <= before["QuantizeLinear"] - fewer_q, (before, after)
    assert after["DequantizeLinear"] < before["DequantizeLinear"]
    size = _file_size(target)
    if options.get("float_weights"):  # int8 weights instead of float weights + Q
        assert size < 0.45 * _file_size(source)
    else:  # int8 weights already: the pairs removed around MaxPool, Flatten, ... shrink it
        assert size < _file_size(source)
    _assert_bit_identical(source, target)


def _fused(path: Path, tmp_path: Path) -> collections.Counter[str]:
    """The op types of the graph ONNX Runtime runs at its default level."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _ops(Path(options.optimized_model_filepath))


@pytest.mark.slow
def test_ort_defaults_vit_int8_pairs_left_for_ort(tmp_path):
    """ORT's defaults quantize activations to int8. Moving those pairs through Reshape and
    the like is exact (unoptimised: identical), but ORT on x86 then cannot turn them into
    uint8 and fuse the MatMuls after them (its outputs differ by a step); the default
    (int8_moves=false) leaves them: identical at ORT's default level too, with the input's
    fusions."""
    source = _ort_quantize(MODELS / "digits_vit.onnx", tmp_path / "qdq.onnx")
    moved, kept = tmp_path / "moved.onnx", tmp_path / "kept.onnx"
    assert _fold(source, moved, "fold-qdq(int8_moves=true)").stats["moved_through"] > 60
    _assert_bit_identical(source, moved, optimised=False)
    record = _fold(source, kept)
    assert record.stats["weights_folded"] == 18  # constants (embeddings) quantized as inputs
    assert any("int8_moves=true moves them" in note for note in record.notes), record.notes
    assert _ops(kept)["QuantizeLinear"] <= _ops(source)["QuantizeLinear"] - 18
    assert _file_size(kept) < _file_size(_round_trip(source, tmp_path / "same.onnx"))
    fused = _fused(source, tmp_path)["QLinearMatMul"]
    assert fused > 0 and _fused(kept, tmp_path)["QLinearMatMul"] == fused
    _assert_bit_identical(source, kept)


def test_int8_pairs_stay_around_maxpool_by_default(tmp_path):
    """Where ORT x86 keeps such a pair (its DQ shared), it runs the MaxPool in float, 10x
    faster than its integer kernel: benchmarks/fold_qdq.py, ResNet-18 with ORT's defaults."""
    source = _ort_quantize(MODELS / "digits_cnn.onnx", tmp_path / "qdq.onnx")
    target = tmp_path / "folded.onnx"
    record = _fold(source, target)
    assert record.stats["moved_through"] == 0  # MaxPool and Flatten stay between pairs
    assert sum("int8_moves=true moves them" in note for note in record.notes) == 2, record.notes
    folded = onnx.load(str(target))
    producers = {out: n.op_type for n in folded.graph.node for out in n.output}
    (maxpool,) = (n for n in folded.graph.node if n.op_type == "MaxPool")
    assert producers[maxpool.input[0]] == "DequantizeLinear"
    _assert_bit_identical(source, target)


@pytest.mark.parametrize("model", ["digits_cnn",
                                   pytest.param("digits_vit", marks=pytest.mark.slow)])
def test_ort_qoperator_format_left_valid_and_bit_identical(model, tmp_path):
    """QOperator models hold few Q/DQ nodes; the integer ops themselves are not touched."""
    source = _ort_quantize(MODELS / f"{model}.onnx", tmp_path / "qop.onnx", qoperator=True)
    target = tmp_path / "folded.onnx"
    _fold(source, target)
    before, after = _ops(source), _ops(target)
    assert any(op.startswith("QLinear") for op in before)
    integer_ops = {op: n for op, n in before.items() if op.startswith(("QLinear", "QGemm"))}
    assert {op: after[op] for op in integer_ops} == integer_ops
    assert after["QuantizeLinear"] <= before["QuantizeLinear"]
    assert _file_size(target) <= _file_size(_round_trip(source, tmp_path / "same.onnx"))
    _assert_bit_identical(source, target)


# --------------------------------------------------------------------------- PyTorch QAT


def _qconfig(kind: str):
    """``reduced``: fbgemm's non-fused QAT default (uint8 activations in (0, 127), per-channel
    symmetric int8 weights); ``int8``: int8 affine activations and per-channel affine
    weights (non-zero zero points); ``per-tensor``: qnnpack's (per-tensor weights)."""
    import torch
    from torch.ao import quantization as tq

    if kind == "reduced":
        return tq.get_default_qat_qconfig("fbgemm", version=0)
    if kind == "per-tensor":
        return tq.get_default_qat_qconfig("qnnpack", version=0)
    return tq.QConfig(
        activation=tq.FakeQuantize.with_args(
            observer=tq.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8),
        weight=tq.FakeQuantize.with_args(
            observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=torch.per_channel_affine))


def _qat_model(kind: str):
    """A small CNN through eager-mode QAT: Conv-BN-ReLU and Conv-ReLU fused, MaxPool, Linear;
    seeded weights, observers run on the digits calibration images, then frozen."""
    import torch
    from torch import nn
    from torch.ao import quantization as tq

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.relu1 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
            self.skip = torch.ao.nn.quantized.FloatFunctional()
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = self.pool(self.relu1(self.bn1(self.conv1(self.quant(x)))))
            x = self.skip.add(x, self.relu2(self.conv2(x)))
            return self.dequant(self.fc(torch.flatten(x, 1)))

    torch.manual_seed(0)
    net = Net().train()
    net.qconfig = _qconfig(kind)
    tq.fuse_modules_qat(net, [["conv1", "bn1", "relu1"], ["conv2", "relu2"]], inplace=True)
    tq.prepare_qat(net, inplace=True)
    for start in range(0, 64, 16):
        net(torch.from_numpy(CALIBRATION[start:start + 16]))
    net.apply(tq.disable_observer)
    return net.eval()


def _frozen_fake_quant(net):
    """torch.export cannot trace ``FakeQuantize.forward`` (it branches on its buffers): swap
    each for the ``fake_quantize_per_*_affine`` call it makes, with its learned parameters."""
    import torch
    from torch import nn
    from torch.ao import quantization as tq

    class Frozen(nn.Module):
        def __init__(self, fq: tq.FakeQuantize) -> None:
            super().__init__()
            self.register_buffer("scale", fq.scale.detach().clone())
            self.register_buffer("zero_point", fq.zero_point.detach().to(torch.int32))
            self.range, self.axis = (fq.quant_min, fq.quant_max), fq.ch_axis
            self.per_channel = fq.is_per_channel
            self.scalar = (float(fq.scale), int(fq.zero_point)) if not self.per_channel else None

        def forward(self, x):
            if self.scalar is None:
                return torch.fake_quantize_per_channel_affine(
                    x, self.scale, self.zero_point, self.axis, *self.range)
            return torch.fake_quantize_per_tensor_affine(x, *self.scalar, *self.range)

    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, tq.FakeQuantize):
                setattr(module, name, Frozen(child))
    return net


def _qat_export(path: Path, kind: str, dynamo: bool) -> Path:
    import torch

    net = _qat_model(kind)
    # torch.export has no symbolic-shape kernel for fake-quant: a static batch there
    kwargs = {"opset_version": 18} if dynamo else {"opset_version": 17,
                                                   "dynamic_axes": {"image": {0: "n"}}}
    if dynamo:
        net = _frozen_fake_quant(net)
    torch.onnx.export(net, (torch.from_numpy(IMAGES[:BATCH]),), str(path), dynamo=dynamo,
                      input_names=["image"], output_names=["logits"], **kwargs)
    return path


@pytest.mark.parametrize("kind,dynamo", [
    ("reduced", False), ("int8", False), ("per-tensor", False),
    ("reduced", True), ("int8", True),
], ids=lambda v: {False: "torchscript", True: "dynamo"}.get(v, v))
def test_torch_qat_export_folded_bit_identical(kind, dynamo, tmp_path):
    source = _qat_export(tmp_path / "qat.onnx", kind, dynamo)
    before = _ops(source)
    assert before["QuantizeLinear"] == 8  # input, 3 weights, 4 activations (one the Add's)
    assert before["Clip"] == (5 if kind == "reduced" else 0)  # the range (0, 127)
    target = tmp_path / "folded.onnx"
    record = _fold(source, target)
    assert not record.notes, record.notes
    assert record.stats["weights_folded"] == 3  # conv1 (BN-scaled), conv2, fc
    # both Relus: their observers saw only values >= 0, so the zero point is qmin and Q
    # saturates what the Relu cuts
    assert record.stats["activations_absorbed"] == 2
    # TorchScript shares equal initializers through Identity nodes and writes [1] scales
    assert (record.stats["identities_bypassed"] > 0) == (record.stats["scalars_made"] > 0)
    assert (record.stats["scalars_made"] > 0) != dynamo
    after = _ops(target)
    assert after["QuantizeLinear"] == 5 and after["Relu"] == 0 and after["Identity"] == 0
    folded = onnx.load(str(target))
    dequantized = {n.input[0] for n in folded.graph.node if n.op_type == "DequantizeLinear"}
    weights = [i for i in folded.graph.initializer if i.name in dequantized]
    assert [i.data_type for i in weights] == [TensorProto.INT8] * 3
    # 4 bytes a weight -> 1; at least 2 of the 3 saved show in the file (the exporters'
    # node metadata, not weights, is most of these small files)
    elements = sum(int(np.prod(i.dims)) for i in folded.graph.initializer
                   if i.name in dequantized and len(i.dims) > 1)
    assert elements == 8 * 9 + 8 * 8 * 9 + 10 * 8 * 16
    assert _file_size(source) - _file_size(target) >= 2 * elements
    _assert_bit_identical(source, target)


# --------------------------------------------------------------------------- in miniature


def _graph_model(nodes, outputs, initializers, opset=21) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [], outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _fold_proto(proto: onnx.ModelProto, tmp_path: Path):
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(proto, str(source))
    model = onnxpress.load(source)
    result = FoldQdq()(model)
    onnxpress.ir.verify(model)
    onnxpress.save(model, target)
    onnx.checker.check_model(str(target), full_check=True)
    for expected, got in zip(_run_empty(source), _run_empty(target), strict=True):
        assert np.array_equal(expected, got)
    return onnx.load(str(target)), result


def _run_empty(path: Path) -> list[np.ndarray]:
    return _session(path, "none").run(None, {})


def _weight(shape=(6, 5), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.5).astype(np.float32)


def test_identity_shared_parameters_are_read_through(tmp_path):
    """TorchScript dedupes equal initializers: the second weight's zero point (and the
    weight itself) arrive through Identity nodes."""
    scale = np.float32(0.01)
    nodes = [
        helper.make_node("Identity", ["zp"], ["zp_copy"]),
        helper.make_node("Identity", ["w"], ["w_copy"]),
        helper.make_node("Identity", ["w_copy"], ["w_copy2"]),
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["q1"]),
        helper.make_node("DequantizeLinear", ["q1", "s", "zp"], ["y1"]),
        helper.make_node("QuantizeLinear", ["w_copy2", "s", "zp_copy"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s", "zp_copy"], ["y2"]),
    ]
    init = [numpy_helper.from_array(_weight(), "w"), numpy_helper.from_array(scale, "s"),
            numpy_helper.from_array(np.int8(3), "zp")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [6, 5]) for n in ("y1", "y2")]
    out, result = _fold_proto(_graph_model(nodes, outputs, init), tmp_path)
    assert result.stats["identities_bypassed"] == 3  # zp of Q2 and DQ2, the weight of Q2
    assert result.stats["weights_folded"] == 2 and not result.notes
    ops = [n.op_type for n in out.graph.node]
    assert ops == ["DequantizeLinear", "DequantizeLinear"]
    assert {i.name for i in out.graph.initializer} >= {"s", "zp"}
    assert "w" not in {i.name for i in out.graph.initializer}


@pytest.mark.parametrize("bounds,folded", [
    ((None, 127), True), ((10, 200), True), ((None, None), True),
    ((200, 10), False),  # an empty range: left to the runtime
])
def test_integer_clip_after_a_weight_quantize_is_folded(bounds, folded, tmp_path):
    """What both exporters write for a fake-quant range (0, 127): Q -> Clip(max=127) -> DQ."""
    weight = _weight() * 4  # reaches past 127 steps of 0.01 above the zero point
    names = [("lo", bounds[0]), ("hi", bounds[1])]
    init = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(0.01), "s"),
            numpy_helper.from_array(np.uint8(60), "zp")]
    init += [numpy_helper.from_array(np.uint8(v), n) for n, v in names if v is not None]
    clip_inputs = ["q"] + [n if v is not None else "" for n, v in names]
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["q"]),
             helper.make_node("Clip", clip_inputs, ["c"]),
             helper.make_node("DequantizeLinear", ["c", "s", "zp"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 5])]
    out, result = _fold_proto(_graph_model(nodes, outputs, init), tmp_path)
    assert result.stats["weights_folded"] == 1
    assert result.stats["clips_folded"] == int(folded)
    assert [n.op_type for n in out.graph.node] == (["DequantizeLinear"] if folded
                                                   else ["Clip", "DequantizeLinear"])
    if folded:
        stored = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
        assert "w_quantized" not in stored  # only the clipped copy is read
        (clipped,) = (v for k, v in stored.items() if k.endswith("_clipped"))
        assert clipped.dtype == np.uint8 and clipped.max() <= (bounds[1] or 255)


def test_one_element_scales_become_scalars(tmp_path):
    """TorchScript's per-tensor parameters are ``[1]``: ORT fuses ``DQ, DQ -> Add -> Q`` into
    a QLinearAdd that rejects them. Shared ones get one 0-d copy each."""
    params = [numpy_helper.from_array(np.array([0.02], np.float32), "s"),
              numpy_helper.from_array(np.array([128], np.uint8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", [x, "s", "zp"], [f"{x}_q"]) for x in "ab"]
    nodes += [helper.make_node("DequantizeLinear", [f"{x}_q", "s", "zp"], [f"{x}_d"])
              for x in "ab"]
    nodes += [helper.make_node("Add", ["a_d", "b_d"], ["sum"]),
              helper.make_node("QuantizeLinear", ["sum", "s", "zp"], ["sum_q"]),
              helper.make_node("DequantizeLinear", ["sum_q", "s", "zp"], ["y"])]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in "aby"]
    graph = helper.make_graph(nodes, "g", info[:2], info[2:], initializer=params)
    source, target = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              source)
    record = _fold(source, target)
    assert record.stats["scalars_made"] == 12  # s and zp of 3 Q and 3 DQ
    stored = {i.name: list(i.dims) for i in onnx.load(str(target)).graph.initializer}
    assert stored == {"s_scalar": [], "zp_scalar": []}
    rng = np.random.default_rng(3)
    feeds = {n: (rng.standard_normal((4, 8)) * 2).astype(np.float32) for n in "ab"}
    (expected,), (unfused,), (fused,) = (
        _session(path, level).run(None, feeds)
        for path, level in ((source, "none"), (target, "none"), (target, "all")))
    assert np.array_equal(expected, unfused) and np.array_equal(expected, fused)
