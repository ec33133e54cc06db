"""``lower-qdq``: the digits models as our pipeline quantizes them (``cleanup,quantize,
fold-qdq``), lowered with and without contrib ops, and small hand-built graphs for the ops
the digits models do not have. Numerics against ONNX Runtime on the QDQ model: with its
graph optimisations off (the QDQ arithmetic as written) each lowered op, fed the same
integers, is within one quantization step (quantized results) or float rounding (float
results); with them on (ORT's own QDQ fusion) the whole model is bit-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.backends.ort_runner import inference_session
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ
from onnxpress.passes.cleanup import Cleanup
from onnxpress.passes.quantize.fold.fold_qdq import FoldQdq
from onnxpress.passes.quantize.lower.lower_qdq import LowerQdq
from onnxpress.passes.quantize.static.quantize import Quantize
from onnxpress.passes.registry import PassRegistry

MODELS = Path(onnxpress.models.__file__).parent
IMAGES = np.load(MODELS / "digits_test.npz")["image"][:64]
LOWERED = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QGemm",
           "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool"}
#: (model, quantize options): "Conv,MatMul" outputs give per-column QLinearMatMul on the
#: weights; symmetric int8 activations leave each Relu to lower-qdq (an integer Clip). Without
#: bias correction there: with it, ORT's fusion (int8 activations moved onto its uint8
#: kernels) and its int8 kernels requantize 1 of 640 logits one step apart, and the
#: bit-identity below is about lowering, not about where ORT's kernels round
CASES = {"cnn": ("digits_cnn", {}), "vit": ("digits_vit", {}),
         "vit-qmatmul": ("digits_vit", {"outputs": "Conv,MatMul"}),
         "cnn-int8": ("digits_cnn", {"activations": "int8", "bias_correction": False})}


@pytest.fixture(scope="module")
def qdq_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lower-qdq")
    paths = {}
    for case, (name, options) in CASES.items():
        int8 = options.get("activations") == "int8"  # int8 pairs moved, as lower-qdq moves them
        model = onnxpress.compile(MODELS / f"{name}.onnx",
                                  [Cleanup(), Quantize(**options), FoldQdq(int8_moves=int8)],
                                  calibration=CALIBRATION_NPZ)
        paths[case] = folder / f"{case}_qdq.onnx"
        onnxpress.save(model, paths[case])
    return paths


def _lower(path: Path, **options) -> tuple[onnx.ModelProto, onnxpress.passes.base.PassStats]:
    model = onnxpress.load(path)
    result = LowerQdq(**options)(model)
    onnxpress.ir.verify(model)
    return onnxpress.to_proto(model), result


def _session(model: onnx.ModelProto | bytes, optimize: bool = True) -> ort.InferenceSession:
    def configure(options: ort.SessionOptions) -> None:
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    source = model if isinstance(model, bytes) else model.SerializeToString()
    return inference_session(source, configure)  # exact int8 on CPUs without VNNI too


def _count(proto: onnx.ModelProto, *ops: str) -> int:
    return sum(n.op_type in ops for n in proto.graph.node)


@pytest.mark.parametrize("contrib", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_quantized_layers_become_integer_ops(qdq_models, case: str, contrib: bool) -> None:
    qdq = onnx.load(qdq_models[case])
    lowered, result = _lower(qdq_models[case], contrib=contrib)
    assert _count(lowered, "Conv", "MatMul", "Gemm") == 0
    assert _count(lowered, "QLinearConv") == _count(qdq, "Conv")
    matmuls = ("QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger")
    assert _count(lowered, *matmuls) == _count(qdq, "MatMul", "Gemm") - (
        _count(lowered, "QGemm"))
    producers = {o: n.op_type for n in lowered.graph.node for o in n.output}
    for node in (n for n in lowered.graph.node if n.op_type in LOWERED):
        fed_by = {producers.get(name) for name in node.input}
        assert "DequantizeLinear" not in fed_by, node.name
    if contrib:
        assert _count(lowered, "QGemm") == _count(qdq, "Gemm") == 1
    else:  # standard ONNX only, and the checker accepts it
        assert {n.domain for n in lowered.graph.node} <= {""}
        onnx.checker.check_model(lowered, full_check=True)
    if case.startswith("cnn"):  # fully integer from the input's Q to the logits
        assert _count(lowered, "DequantizeLinear") == int(not contrib)
        assert _count(lowered, "QuantizeLinear") == 1 + int(not contrib)
        assert len(result.notes) == int(not contrib)  # GlobalAveragePool: contrib only
        assert _count(lowered, "Clip") == (3 if case == "cnn-int8" else 0)
    assert result.stats["kept"] == sum("kept in QDQ form" in n for n in result.notes)


@pytest.mark.parametrize("contrib", [True, False])
@pytest.mark.parametrize("case", ["cnn", "vit", "cnn-int8"])
def test_equal_to_ort_own_qdq_fusion(qdq_models, case: str, contrib: bool) -> None:
    """ORT (default optimisations) fuses the QDQ model into the same kernels: bit-identical;
    the standard-ONNX form differs by float rounding of the rescale."""
    lowered, _ = _lower(qdq_models[case], contrib=contrib)
    feeds = {"image": IMAGES}
    expected = _session(qdq_models[case].read_bytes()).run(None, feeds)[0]
    actual = _session(lowered).run(None, feeds)[0]
    if contrib:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _subgraph(proto: onnx.ModelProto, inputs: dict[str, np.ndarray], output: str) -> bytes:
    """The nodes that compute ``output`` from ``inputs`` and initializers, as a model."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    known = set(inputs) | {i.name for i in proto.graph.initializer} | {""}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name not in known and id(producers[name]) not in needed:
            needed.add(id(producers[name]))
            stack.extend(producers[name].input)
    nodes = [n for n in proto.graph.node if id(n) in needed]
    used = {name for n in nodes for name in n.input}
    graph = helper.make_graph(
        nodes, "op", [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                    None) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(output)],
        initializer=[i for i in proto.graph.initializer if i.name in used])
    model = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=9)
    return model.SerializeToString()


def _lowered_ops(qdq: onnx.ModelProto, lowered: onnx.ModelProto):
    """Each lowered op: its activation inputs and the value (named in both models) that its
    result lands in, after the Cast/Mul/Add or data movement that follows it."""
    qdq_values = {o for n in qdq.graph.node for o in n.output}
    inits = {i.name for i in lowered.graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in lowered.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for node in (n for n in lowered.graph.node if n.op_type in LOWERED):
        out = node.output[0]
        while out not in qdq_values:
            out = users[out][0].output[0]
        yield node, [i for i in node.input if i and i not in inits], out


@pytest.mark.parametrize("case,contrib", [("cnn", True), ("cnn", False), ("vit", True),
                                          ("vit", False), ("vit-qmatmul", True),
                                          ("cnn-int8", True)])
def test_each_op_within_one_step_of_qdq(qdq_models, case: str, contrib: bool) -> None:
    """Each lowered op alone, fed the QDQ model's own integers: quantized results within one
    step of DQ -> op -> Q in float (ORT optimisations off); float results within float
    rounding."""
    qdq = onnx.load(qdq_models[case])
    lowered, _ = _lower(qdq_models[case], contrib=contrib)
    ops = list(_lowered_ops(qdq, lowered))
    names = sorted({name for _, inputs, _ in ops for name in inputs})
    exposed = onnx.ModelProto()
    exposed.CopyFrom(qdq)
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    values = dict(zip(names, _session(exposed, optimize=False).run(names, {"image": IMAGES})))
    for node, inputs, out in ops:
        feeds = {name: values[name] for name in inputs}
        expected = _session(_subgraph(qdq, feeds, out), optimize=False).run(None, feeds)[0]
        actual = _session(_subgraph(lowered, feeds, out)).run(None, feeds)[0]
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, node.name
        if actual.dtype == np.float32:
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale,
                                       err_msg=node.name)
        else:
            steps = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
            assert steps.max() <= 1, (node.name, steps.max())
    assert ops, "nothing was lowered"


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_accuracy_kept(qdq_models, name: str, tmp_path: Path) -> None:
    case = "cnn" if name == "digits_cnn" else "vit"
    lowered, _ = _lower(qdq_models[case])
    path = tmp_path / "lowered.onnx"
    onnx.save(lowered, path)
    qdq_accuracy = onnxpress.evaluate(qdq_models[case], "digits").value
    assert onnxpress.evaluate(path, "digits").value >= qdq_accuracy - 0.003
    fp32 = _session((MODELS / f"{name}.onnx").read_bytes()).run(None, {"image": IMAGES})[0]
    int8 = _session(lowered).run(None, {"image": IMAGES})[0]
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.97
    assert np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()


# --------------------------------------------------------------------------- small graphs


def _graph_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                           for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                               for n in outputs],
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _qdq(x: str, prefix: str, *, q: bool = True, axis: int | None = None):
    """``x -> Q -> DQ -> prefix`` (or only DQ of an integer ``x``), parameters ``prefix_s/z``."""
    params = [f"{prefix}_s", f"{prefix}_z"]
    attrs = {} if axis is None else {"axis": axis}
    dq_in = f"{prefix}_q" if q else x
    nodes = [helper.make_node("QuantizeLinear", [x, *params], [dq_in])] if q else []
    return nodes + [helper.make_node("DequantizeLinear", [dq_in, *params], [prefix], **attrs)]


def _params(prefix: str, scale: float, zero: int, dtype=np.uint8) -> dict[str, np.ndarray]:
    return {f"{prefix}_s": np.float32(scale), f"{prefix}_z": np.asarray(zero, dtype)}


#: output -> (scale, zero point) of its Q
ELEMENTWISE_OUTPUTS = {"add": (0.05, 100), "mul": (0.1, 60), "cat": (0.04, 110),
                       "flat": (0.01, 128)}


def _elementwise_model() -> onnx.ModelProto:
    """Add, Mul, Concat (its inputs on other scales) and GlobalAveragePool -> Flatten, each
    between DQ and Q."""
    nodes = _qdq("x", "a") + _qdq("y", "b") + [
        helper.make_node("Add", ["a", "b"], ["add"]),
        helper.make_node("Mul", ["a", "b"], ["mul"]),
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["a"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
    ]
    inits = _params("a", 0.02, 120) | _params("b", 0.03, 90)
    for name, (scale, zero) in ELEMENTWISE_OUTPUTS.items():
        nodes += _qdq(name, f"{name}_out")
        inits |= _params(f"{name}_out", scale, zero)
    shape = [8, 4, 6, 6]
    return _graph_model(nodes, [("x", shape), ("y", shape)],
                        ["add_out", "mul_out", "cat_out", "flat_out"], inits)


def test_contrib_elementwise_ops_within_one_step() -> None:
    proto = _elementwise_model()
    model = onnxpress.load(proto)
    result = LowerQdq()(model)
    onnxpress.ir.verify(model)
    lowered = onnxpress.to_proto(model)
    assert result.stats == {"QLinearAdd": 1, "QLinearMul": 1, "QLinearConcat": 1,
                            "QLinearGlobalAveragePool": 1, "kept": 0}
    assert _count(lowered, "Flatten") == 1 and _count(lowered, "QuantizeLinear") == 2
    rng = np.random.default_rng(0)
    feeds = {k: rng.uniform(-2.5, 2.5, (8, 4, 6, 6)).astype(np.float32) for k in ("x", "y")}
    expected = _session(proto, optimize=False).run(None, feeds)
    actual = _session(lowered).run(None, feeds)
    for (name, (step, _)), a, e in zip(ELEMENTWISE_OUTPUTS.items(), actual, expected,
                                       strict=True):
        steps = np.abs(a - e) / step
        assert steps.max() <= 1.001, (name, steps.max())  # measured: Mul 1 step in 0.1%
    for a, e in zip(actual, _session(proto).run(None, feeds), strict=True):
        np.testing.assert_array_equal(a, e)  # ORT's own fusion builds the same kernels


def _gemm_model(quantized_output: bool) -> onnx.ModelProto:
    """Gemm with alpha, beta, transB, a per-channel weight and a float bias C."""
    rng = np.random.default_rng(3)
    weight = rng.integers(-127, 128, (5, 8)).astype(np.int8)
    nodes = _qdq("x", "a") + _qdq("w", "wd", q=False, axis=0) + [
        helper.make_node("Gemm", ["a", "wd", "c"], ["g"], alpha=0.5, beta=2.0, transB=1)]
    inits = _params("a", 0.02, 120) | {"w": weight, "c": rng.normal(0, 1, 5).astype(np.float32),
                                       "wd_s": rng.uniform(0.005, 0.02, 5).astype(np.float32),
                                       "wd_z": np.zeros(5, np.int8)}
    if quantized_output:
        nodes += _qdq("g", "y")
        inits |= _params("y", 0.05, 128)
    else:
        nodes[-1].output[0] = "y"
    return _graph_model(nodes, [("x", [4, 8])], ["y"], inits)


@pytest.mark.parametrize("contrib", [True, False])
@pytest.mark.parametrize("quantized_output", [True, False])
def test_gemm_with_alpha_beta_and_float_bias(contrib: bool, quantized_output: bool) -> None:
    proto = _gemm_model(quantized_output)
    model = onnxpress.load(proto)
    result = LowerQdq(contrib=contrib)(model)
    lowered = onnxpress.to_proto(model)
    assert _count(lowered, "Gemm") == 0 and result.stats["kept"] == 0
    assert _count(lowered, "QGemm" if contrib else "MatMulInteger") == 1
    feeds = {"x": np.random.default_rng(4).uniform(-2, 2, (4, 8)).astype(np.float32)}
    expected = _session(proto, optimize=False).run(None, feeds)[0]
    actual = _session(lowered).run(None, feeds)[0]
    # a quantized result: one step; a float one: C rounded onto alpha * s_a * s_w (contrib)
    tolerance = 0.05 if quantized_output else 0.5 * 0.02 * 0.02 + 1e-5 * np.abs(expected).max()
    assert np.abs(actual - expected).max() <= tolerance * 1.001


def _float_output_conv() -> onnx.ModelProto:
    weight = np.random.default_rng(1).integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    nodes = _qdq("x", "a") + _qdq("w", "wd", q=False, axis=0) + [
        helper.make_node("Conv", ["a", "wd"], ["y"], pads=[1, 1, 1, 1])]
    inits = _params("a", 0.02, 120) | {"w": weight, "wd_s": np.full(4, 0.01, np.float32),
                                       "wd_z": np.zeros(4, np.int8)}
    return _graph_model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)


def _row_weight_matmul() -> onnx.ModelProto:
    """A [K, N] weight quantized per row (axis 0): no integer MatMul takes that."""
    weight = np.random.default_rng(2).integers(-127, 128, (8, 5)).astype(np.int8)
    nodes = _qdq("x", "a") + _qdq("w", "wd", q=False, axis=0) + [
        helper.make_node("MatMul", ["a", "wd"], ["y"])]
    inits = _params("a", 0.02, 120) | {"w": weight, "wd_s": np.full(8, 0.01, np.float32),
                                       "wd_z": np.zeros(8, np.int8)}
    return _graph_model(nodes, [("x", [3, 8])], ["y"], inits)


def _softmax_between() -> onnx.ModelProto:
    nodes = _qdq("x", "a") + [helper.make_node("Softmax", ["a"], ["s"])] + _qdq("s", "y")
    return _graph_model(nodes, [("x", [2, 6])], ["y"],
                        _params("a", 0.02, 120) | _params("y", 1 / 256, 0))


@pytest.mark.parametrize("build,options,node,reason", [
    (_float_output_conv, {}, "Conv", "output is float"),
    (_row_weight_matmul, {}, "MatMul", "along axis 0, not 1"),
    (_softmax_between, {}, "Softmax", "no integer lowering for Softmax"),
    (_elementwise_model, {"contrib": False}, "Add", "contrib=false"),
    (_elementwise_model, {"ops": "Conv,MatMul"}, None, None),
])
def test_unsupported_patterns_stay_unchanged(build, options, node, reason) -> None:
    proto = build()
    before = onnxpress.to_proto(onnxpress.load(proto))
    model = onnxpress.load(proto)
    result = LowerQdq(fold=False, **options)(model)
    after = onnxpress.to_proto(model)
    wiring = [[(n.op_type, list(n.input), list(n.output)) for n in p.graph.node]
              for p in (before, after)]
    assert wiring[0] == wiring[1] and not result.modified
    if node is not None:
        assert any(note.startswith(f"{node} ") and reason in note for note in result.notes), (
            result.notes)


def test_runs_by_name_in_a_pipeline() -> None:
    registry = PassRegistry.default()
    registry.register(LowerQdq)  # a no-op once the catalogue lists it
    model, report = onnxpress.compile(
        MODELS / "digits_cnn.onnx", "cleanup,quantize,fold-qdq,lower-qdq(contrib=false)",
        calibration=CALIBRATION_NPZ, registry=registry, return_report=True)
    assert report.passes[-1].stats["QLinearConv"] == 3
    assert LowerQdq(contrib=False).spec() == "lower-qdq(contrib=false)"
    onnx.checker.check_model(onnxpress.to_proto(model), full_check=True)


def test_unknown_op_option_is_a_one_line_error() -> None:
    with pytest.raises(BadInputError, match="Softmax"):
        LowerQdq(ops="Conv,Softmax")


@pytest.mark.parametrize("qdq_ms, kept", [(9.0, "qdq"), (9.9, "qoperator"), (12.0, "qoperator")])
def test_form_measure_keeps_the_faster_form_with_a_margin_for_qdq(
        qdq_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, qdq_ms: float,
        kept: str) -> None:
    """The choice, with the timings faked: QDQ is kept only when 3% faster than 10 ms."""
    from onnxpress.backends import bench

    def timed(models, **_):
        return [bench.BenchRow(label, 1, 2, ms, ms, ms, 1e3 / ms, 1)
                for (label, _), ms in zip(models, (10.0, qdq_ms))]

    monkeypatch.setattr(bench, "bench_models", timed)
    qdq = onnxpress.load(qdq_models["cnn"])
    before = sorted(n.op_type for n in qdq.graph)
    result = LowerQdq(form="measure")(qdq)
    after = sorted(n.op_type for n in qdq.graph)
    assert result.stats["form"] == kept
    assert ("QLinearConv" in after) == (kept == "qoperator")
    assert (after == before) == (kept == "qdq")
    assert result.stats["qdq_ms"] == qdq_ms


def test_form_measure_times_both_and_matches_the_form_it_keeps(
        qdq_models: dict[str, Path], tmp_path: Path) -> None:
    """Measured for real: the kept model computes what that form computes (bit-identical to
    the QDQ input under ORT's fusion, or to ``form=qoperator``)."""
    chosen = onnxpress.compile(qdq_models["vit"], "lower-qdq(form=measure)",
                               calibration=CALIBRATION_NPZ)
    forced = onnxpress.compile(qdq_models["vit"], "lower-qdq")
    paths = {}
    for name, model in (("chosen", chosen), ("forced", forced)):
        paths[name] = tmp_path / f"{name}.onnx"
        onnxpress.save(model, paths[name])
    reference = qdq_models["vit"] if not any(n.op_type == "QAttention" or n.domain
                                             for n in chosen.graph) else paths["forced"]
    feeds = {"image": IMAGES[:16]}
    got = _session(paths["chosen"].read_bytes()).run(None, feeds)[0]
    want = _session(Path(reference).read_bytes()).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


def test_form_must_be_known() -> None:
    with pytest.raises(BadInputError, match="form=fast"):
        LowerQdq(form="fast")


def test_form_auto_is_a_rule_the_integer_operators(qdq_models: dict[str, Path]) -> None:
    """Same input, same config, same bytes: form=auto times nothing (bench is never called)
    and writes what form=qoperator writes, saying so in its note."""
    from onnxpress.backends import bench

    def refuse(*_, **__):
        raise AssertionError("form=auto must not time anything")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "bench_models", refuse)
        auto = onnxpress.compile(qdq_models["vit"], "lower-qdq(form=auto)",
                                 return_report=True)
    forced = onnxpress.compile(qdq_models["vit"], "lower-qdq(form=qoperator)")
    model, report = auto
    assert onnxpress.to_proto(model).SerializeToString() == \
        onnxpress.to_proto(forced).SerializeToString()
    (lowered,) = report.passes
    assert lowered.stats["form"] == "qoperator"
    assert any(n.startswith("lower-qdq(form=auto): integer operators") for n in lowered.notes)
