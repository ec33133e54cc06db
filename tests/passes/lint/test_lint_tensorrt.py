"""``lint-tensorrt``: each deliberately wrong graph yields its named violation and a correct
one none; ``strict`` fails the run; the ``--target tensorrt`` outputs of zoo models (image,
ViT, text) are clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.errors import CheckFailedError
from onnxpress.passes.lint import LintTensorrt

F, I8, U8 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes: list, inits: list, *, x_shape=(1, 8), y_shape=(1, 4), opset: int = 17,
           extra_opsets: tuple = ()) -> onnxpress.ir.Model:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, list(x_shape))],
                              [helper.make_tensor_value_info("y", F, list(y_shape))], inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return onnxpress.load(helper.make_model(graph, opset_imports=opsets))


def _qdq_matmul(*, act_zero: int = 0, act_type: int = I8, w_scales: np.ndarray | None = None,
                w_axis: int = 1) -> onnxpress.ir.Model:
    """x -> Q -> DQ -> MatMul(DQ(w [8, 4])) -> y: correct with the defaults."""
    zero_dtype = np.int8 if act_type == I8 else np.uint8
    w_scales = np.full(4, 0.02, np.float32) if w_scales is None else w_scales
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], name="dq_w", axis=w_axis),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
    ]
    inits = [_const("sx", np.float32(0.1)), _const("zx", zero_dtype(act_zero)),
             _const("w", np.ones((8, 4), np.int8)), _const("sw", w_scales),
             _const("zw", np.zeros(w_scales.shape, np.int8))]
    return _model(nodes, inits)


def _rules(model: onnxpress.ir.Model, **options) -> set[str]:
    return {v.rule for v in LintTensorrt(**options).violations(model)}


def test_a_correct_qdq_graph_has_no_violation() -> None:
    assert _rules(_qdq_matmul()) == set()


@pytest.mark.parametrize("model, rule", [
    (lambda: _qdq_matmul(act_zero=5), "asymmetric-quantization"),
    (lambda: _qdq_matmul(act_type=U8), "quantized-type"),
    (lambda: _qdq_matmul(w_scales=np.float32(0.02)), "per-tensor-weight"),
    (lambda: _qdq_matmul(w_scales=np.full(8, 0.02, np.float32), w_axis=0), "weight-channel-axis"),
], ids=["asymmetric-activation", "uint8", "per-tensor-weight", "wrong-axis"])
def test_each_wrong_quantization_is_named(model, rule: str) -> None:
    assert _rules(model()) == {rule}


def test_an_asymmetric_activation_names_the_node_and_the_fix() -> None:
    found = LintTensorrt().violations(_qdq_matmul(act_zero=5))
    assert [v.element for v in found] == ["QuantizeLinear 'q_x'", "DequantizeLinear 'dq_x'"]
    assert all("activation zero point 5 is not 0" in v.detail for v in found)


def test_a_per_tensor_conv_weight_is_named() -> None:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv"),
    ]
    inits = [_const("sx", np.float32(0.1)), _const("zx", np.int8(0)),
             _const("w", np.ones((4, 2, 3, 3), np.int8)), _const("sw", np.float32(0.02)),
             _const("zw", np.int8(0))]
    model = _model(nodes, inits, x_shape=(1, 2, 5, 5), y_shape=(1, 4, 3, 3))
    (violation,) = LintTensorrt().violations(model)
    assert (violation.rule, violation.element) == ("per-tensor-weight", "Conv 'conv'")


def test_a_per_channel_activation_is_named() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)]
    model = _model(nodes, [_const("s", np.full(8, 0.1, np.float32)),
                           _const("z", np.zeros(8, np.int8))], y_shape=(1, 8))
    assert _rules(model) == {"per-channel-activation"}


def test_a_half_quantized_matmul_is_named() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xd"]),
             helper.make_node("MatMul", ["xd", "w"], ["y"], name="mm")]
    model = _model(nodes, [_const("s", np.float32(0.1)), _const("z", np.int8(0)),
                           _const("w", np.ones((8, 4), np.float32))])
    assert _rules(model) == {"half-quantized"}


@pytest.mark.parametrize("node, extra", [
    (helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft"),
     (helper.make_opsetid("com.microsoft", 1),)),
    (helper.make_node("Unique", ["x"], ["y"]), ()),
], ids=["contrib-domain", "no-parser-support"])
def test_an_unsupported_op_is_named(node, extra) -> None:
    model = _model([node], [], y_shape=(1, 8), extra_opsets=extra)
    violations = LintTensorrt().violations(model)
    assert [v.rule for v in violations] == ["unsupported-op"]
    assert node.op_type in violations[0].element


def test_the_integer_operator_form_is_unsupported() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["xi"], to=I8),
             helper.make_node("MatMulInteger", ["xi", "w"], ["acc"], name="mmi"),
             helper.make_node("Cast", ["acc"], ["y"], to=F)]
    model = _model(nodes, [_const("w", np.ones((8, 4), np.int8))])
    assert _rules(model) == {"unsupported-op"}


def test_an_unpaired_quantize_and_a_computed_axes_input_are_named() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="lone"),
             helper.make_node("Cast", ["q"], ["qf"], to=F),
             helper.make_node("Shape", ["qf"], ["shape"], start=0, end=1),
             helper.make_node("Sub", ["shape", "one"], ["axis"]),
             helper.make_node("ReduceSum", ["qf", "axis"], ["y"], keepdims=1)]
    model = _model(nodes, [_const("s", np.float32(0.1)), _const("z", np.int8(0)),
                           _const("one", np.array([1], np.int64))], y_shape=(1, 8))
    assert _rules(model) == {"unpaired-quantize", "non-constant-input"}


def test_dynamic_inputs_need_static_shapes_or_a_profile() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [], x_shape=("batch", 8),
                   y_shape=("batch", 8))
    assert _rules(model) == {"dynamic-shape"}
    assert _rules(model, dynamic=True) == set()


def test_an_opset_outside_tensorrts_range_is_named() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [], y_shape=(1, 8), opset=8)
    assert _rules(model) == {"opset"}


def test_strict_fails_the_run_with_the_rule_named() -> None:
    with pytest.raises(CheckFailedError, match="asymmetric-quantization"):
        LintTensorrt(strict=True)(_qdq_matmul(act_zero=5))
    result = LintTensorrt()(_qdq_matmul(act_zero=5))
    assert result.stats == {"violations": 2, "asymmetric-quantization": 2}  # the Q and the DQ
    assert not result.modified


def _clean(path: Path, data, tmp_path: Path) -> dict:
    model, report = onnxpress.compile(str(path), "int8", target="tensorrt", calibration=data,
                                      return_report=True)
    (lint,) = [p for p in report.passes if p.name == "lint-tensorrt"]
    out = tmp_path / "trt.onnx"
    onnxpress.save(model, out)
    onnx.checker.check_model(str(out))
    return lint.stats | {"notes": lint.notes}


def _images(shape: tuple[int, ...], count: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"pixel_values": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("name", ["resnet18", "vit_32"])
def test_tensorrt_target_outputs_of_zoo_models_are_clean(name: str, tmp_path: Path) -> None:
    from onnxpress.models import zoo

    path = zoo.get(name).export(tmp_path / f"{name}.onnx")
    size = 224 if name == "resnet18" else 32
    found = _clean(path, _images((1, 3, size, size)), tmp_path)
    assert found["violations"] == 0, found["notes"]


def test_tensorrt_target_output_of_minilm_is_clean(minilm_path: Path, tmp_path: Path) -> None:
    from onnxpress.models.minilm import tokenize

    batches = [tokenize([f"sentence number {i} about a cat"], pad_to=32) for i in range(4)]
    found = _clean(minilm_path, batches, tmp_path)
    assert found["violations"] == 0, found["notes"]
