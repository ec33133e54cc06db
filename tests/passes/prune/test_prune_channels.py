"""``prune(structure=channel)`` on real graphs: the zoo ResNet-18/50 and MobileNetV2 (dynamo
exports, 32 px inputs to keep the tests quick) and the ``light_*`` models in ONNX's wheel
(TorchScript-era Caffe2 exports: Sum residuals, Concat-heavy DenseNet/Inception/SqueezeNet,
BatchNorm spelled as Mul + Add). Each pruned model must pass the ONNX checker and strict
shape inference (every coupled tensor shrank consistently), run on ONNX Runtime with the
same output shape, and really have fewer channels. When exactly the channels the pass
removes are zero (every producer's rows and biases, depthwise filters, BatchNorm shift,
per-channel Add constants), the outputs do not change (1e-5), as ONNX Runtime on the
unpruned model says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from pass_checks import Within, check_pass

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.channel_groups import channel_groups
from onnxpress.passes.prune import Prune

LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"
LIGHT_MODELS = ["light_resnet50", "light_densenet121", "light_inception_v1", "light_squeezenet"]
ZOO = ["resnet18", "resnet50", "mobilenet_v2"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model after ``cleanup`` (BatchNorm folded, weights constant), saved."""
    from onnxpress.models import mobilenet, resnet

    folder = tmp_path_factory.mktemp("prune")
    builders = {"resnet18": resnet.resnet18, "resnet50": resnet.resnet50,
                "mobilenet_v2": mobilenet.mobilenet_v2}
    paths = {}
    for name in ZOO:
        axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
        model = onnxpress.from_torch(builders[name](num_classes=10).eval(),
                                     resnet.example_inputs(2, 32), input_names=["pixel_values"],
                                     output_names=["logits"], dynamic_axes=axes)
        paths[name] = onnxpress.save(onnxpress.compile(model, "cleanup"), folder / f"{name}.onnx")
    for name in LIGHT_MODELS:  # their weights are ConstantOfShape: fold them all
        model = onnxpress.compile(LIGHT / f"{name}.onnx", "cleanup(max_output_elements=100000000)")
        paths[name] = onnxpress.save(model, folder / f"{name}.onnx")
    return paths


def _run(path_or_proto, x: np.ndarray) -> np.ndarray:
    source = path_or_proto if isinstance(path_or_proto, (str, Path)) else \
        path_or_proto.SerializeToString()
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _input(name: str) -> np.ndarray:
    size = 32 if name in ZOO else 224
    batch = 2 if name in ZOO else 1
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def _conv_channels(proto: onnx.ModelProto) -> int:
    weights = {i.name: i for i in proto.graph.initializer}
    return sum(weights[n.input[1]].dims[0] for n in proto.graph.node if n.op_type == "Conv")


@pytest.mark.parametrize("name", ZOO + LIGHT_MODELS)
def test_pruned_graph_is_consistent_and_runs(sources, name):
    model = onnxpress.load(sources[name])
    result = Prune(ratio=0.3)(model)
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    before = onnx.load(sources[name])
    assert _conv_channels(proto) < 0.8 * _conv_channels(before)
    assert result.stats["channels_removed"] > 0.2 * result.stats["channels"]
    x = _input(name)
    assert _run(proto, x).shape == _run(sources[name], x).shape


@pytest.mark.parametrize("name", ZOO + LIGHT_MODELS)
def test_pruning_zero_channels_keeps_outputs(sources, name):
    model = onnxpress.load(sources[name])
    chosen = _zero_the_channels_prune_will_remove(model)
    x = _input(name)
    checked = check_pass("prune(ratio=0.3)", model, {model.graph.inputs[0].name: x},
                         tolerance=Within(2e-5), fewer=["parameters"])
    assert checked.stats("prune")["channels_removed"] == chosen > 0


def _zero_the_channels_prune_will_remove(model: ir.Model) -> int:
    """Make the channels ``Prune(ratio=0.3)`` will pick (its count per group; magnitude
    then ranks them first, as they score 0) produce exact zeros; how many."""
    pruner, total, copies = Prune(ratio=0.3), 0, 0
    for group in channel_groups(model.graph):
        if group.blocked or group.kind != "conv":
            continue
        count = pruner._count(group.size)
        picked = np.random.default_rng(len(group.spaces)).choice(group.size, count,
                                                                 replace=False)
        total += count
        for item in group.slices:
            zero = (item.role == "producer" or (item.role == "param" and (
                item.node.op_type in ("Conv", "Add", "Sub")
                or (item.node.op_type == "BatchNormalization" and item.index in (2, 3)))))
            if not zero:
                continue
            value = item.node.inputs[item.index]
            array = np.array(constant_array(value))
            index = [slice(None)] * array.ndim
            index[item.axis] = item.offset + picked
            array[tuple(index)] = 0
            copies += 1
            copy = ir.Value(name=f"{value.name}_zeroed_{copies}", shape=value.shape,
                            type=value.type, const_value=ir.tensor(array))
            model.graph.register_initializer(copy)
            item.node.replace_input_with(item.index, copy)
    return total


def test_bad_ratio_is_a_one_line_error():
    with pytest.raises(BadInputError, match="ratio"):
        Prune(ratio=1.5)


def test_a_model_with_no_prunable_groups_is_refused(sources):
    """A single Conv whose output is the graph output: its channels must stay."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(BadInputError, match="no prunable channel groups.*graph output 'y'"):
        Prune()(model)


def test_groups_through_lrn_are_pruned(sources):
    """Inception's first two stages feed LRN, which mixes neighbouring channels: it used to
    block both groups; it passes channels on now (its window spans the kept ones)."""
    model = onnxpress.load(sources["light_inception_v1"])
    result = Prune(ratio=0.3, refit=False)(model)
    assert not [note for note in result.notes if "LRN" in note], result.notes
    lrn = [n for n in model.graph if n.op_type == "LRN"]
    assert len(lrn) == 2 and all(n.inputs[0].shape is None or n.inputs[0].shape[1] < 192
                                 for n in lrn)
    assert result.stats["groups"] >= 11, result.stats
