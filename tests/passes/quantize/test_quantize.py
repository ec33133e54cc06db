"""``quantize``: static PTQ in QDQ form, judged on the trained digits models (real accuracy,
calibrated on training images, scored on the test split) and on real MiniLM's mask path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_checks import Cosine, check_pass

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ
from onnxpress.passes.cleanup import Cleanup
from onnxpress.passes.quantize.static.quantize import Quantize

MODELS = Path(onnxpress.models.__file__).parent


def _quantized(path: Path, tmp_path: Path, **options) -> tuple[Path, onnxpress.Report]:
    """cleanup first (BatchNorm folded into the Convs, as the int8 pipeline does), then
    quantize with data from the training split."""
    model, report = onnxpress.compile(path, [Cleanup(), Quantize(**options)],
                                      calibration=CALIBRATION_NPZ, return_report=True)
    out = tmp_path / f"{path.stem}_int8.onnx"
    onnxpress.save(model, out)
    onnx.checker.check_model(str(out), full_check=True)
    return out, report


@pytest.mark.parametrize("name", ["digits_cnn", "digits_vit"])
def test_digits_accuracy_drops_at_most_0_3_points(name: str, tmp_path: Path) -> None:
    fp32 = MODELS / f"{name}.onnx"
    int8, report = _quantized(fp32, tmp_path)
    before = onnxpress.evaluate(fp32, "digits").value
    after = onnxpress.evaluate(int8, "digits").value
    assert after >= before - 0.003, (before, after)
    stats = report.passes[-1].stats
    assert stats["weights"] > 0 and stats["activations"] > 0
    ops = onnxpress.inspect(int8)["ops"]
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0


def test_weights_are_stored_as_int8(tmp_path: Path) -> None:
    int8, _ = _quantized(MODELS / "digits_vit.onnx", tmp_path)
    proto = onnx.load(int8)
    kinds = {init.data_type for init in proto.graph.initializer if len(init.dims) == 2}
    assert onnx.TensorProto.INT8 in kinds
    big_float = [i.name for i in proto.graph.initializer
                 if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 4096]
    assert big_float == [] or all("pos" in n or "cls" in n for n in big_float), big_float


def test_conv_outputs_are_quantized_after_their_relu(tmp_path: Path) -> None:
    int8, _ = _quantized(MODELS / "digits_cnn.onnx", tmp_path)
    graph = onnx.load(int8).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    fused = 0
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        users = [n for n in graph.node if conv.output[0] in n.input]
        if len(users) == 1 and users[0].op_type == "Relu":
            assert users[0].output[0] in quantized and conv.output[0] not in quantized
            fused += 1
    assert fused >= 2


def test_missing_data_is_a_one_line_error() -> None:
    with pytest.raises(BadInputError, match="calibration"):
        onnxpress.compile(MODELS / "digits_cnn.onnx", [Quantize()])


def test_minilm_mask_path_stays_float(minilm_path: Path, tmp_path: Path) -> None:
    from onnxpress.models.datasets import load_dataset

    data = load_dataset("minilm-texts")
    batches = [dict(b) for b, _ in zip(data.batches(16), range(4))]
    model, report = onnxpress.compile(minilm_path, [Quantize()], calibration=batches,
                                      return_report=True)
    out = tmp_path / "minilm_int8.onnx"
    onnxpress.save(model, out)
    graph = onnx.load(out).graph
    tainted = {"attention_mask"}
    for node in graph.node:  # graph order is topological
        if any(i in tainted for i in node.input) and node.op_type not in ("Add",):
            tainted.update(node.output)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in tainted for n in graph.node)
    result = onnxpress.evaluate(out, "minilm-texts")
    assert result.metrics["spearman"] > 0.99, result.metrics  # measured 0.996


def test_residual_adds_join_the_int8_domain(tmp_path: Path) -> None:
    """ResNet's residual Adds read two quantized Conv outputs: quantize gives them Q/DQ on
    both inputs and on the output after their Relu, so lower-qdq runs them as QLinearAdd
    and no float Add or Relu is left; the logits stay close to ONNX Runtime's fp32 ones."""
    from onnxpress.models import resnet
    from onnxpress.passes.registry import PRESETS

    fp32 = tmp_path / "resnet18.onnx"
    axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    onnxpress.save(onnxpress.from_torch(
        resnet.resnet18(num_classes=10).eval(), resnet.example_inputs(2, 32),
        input_names=["pixel_values"], output_names=["logits"], dynamic_axes=axes), fp32)
    images = resnet.example_inputs(24, 32)[0].numpy()
    calibration = [{"pixel_values": images[i:i + 4]} for i in range(0, 16, 4)]
    # the int8 preset with its lowering pinned (form=auto would time both forms, and on a
    # loaded machine this small ResNet's QDQ form can measure faster) and its Convs
    # quantized (the cost rule keeps them float on ORT CPU)
    pipeline = (PRESETS["int8"][1]["ort-cpu"].replace("form=auto", "form=qoperator")
                .replace("cost=true", "cost=false"))
    assert pipeline != PRESETS["int8"][1]["ort-cpu"].replace("form=auto", "form=qoperator")
    adds = onnxpress.inspect(fp32)["ops"]["Add"]
    assert adds == 8
    check_pass(pipeline, fp32, {"pixel_values": images[16:]}, tolerance=Cosine(0.98),
               calibration=calibration, counts={"QLinearAdd": adds, "Add": 0, "Relu": 0})
