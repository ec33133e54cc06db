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
from pass_checks import IR_VERSION, Within, check_pass

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
    model = onnxpress.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                             ir_version=IR_VERSION))
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


def _shuffle_unit(channels: int, first_groups: int, pieces: int, second_groups: int,
                  zero_rows: list[int], rng: np.random.Generator):
    """GConv (``first_groups``) -> Relu -> shuffle of ``pieces`` -> depthwise 3x3 (bias)
    -> GConv (``second_groups``) -> output, random weights; the first GConv's output
    channels ``j*C/g + i`` for ``i`` in ``zero_rows`` (the same positions in every piece)
    are made exact zeros, and the depthwise bias at their shuffled positions ``i*g + j``
    (worked out here, not by the library) too. Returns the model and the zeroed channels'
    shuffled positions."""
    from onnx import TensorProto, helper, numpy_helper

    width = channels // pieces
    w1 = rng.standard_normal((channels, 8 // first_groups, 1, 1)).astype(np.float32)
    b1 = rng.standard_normal(channels).astype(np.float32)
    dw = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
    db = rng.standard_normal(channels).astype(np.float32)
    w2 = rng.standard_normal((8, channels // second_groups, 1, 1)).astype(np.float32)
    zeroed = [j * width + i for i in zero_rows for j in range(pieces)]
    shuffled = [i * pieces + j for i in zero_rows for j in range(pieces)]
    w1[zeroed], b1[zeroed], db[shuffled] = 0, 0, 0
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (b1, "b1"), (dw, "dw"), (db, "db"), (w2, "w2"),
        (np.array([1, pieces, width, 6, 6]), "split"), (np.array([1, channels, 6, 6]), "back")]]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], group=first_groups, name="g1"),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Reshape", ["r", "split"], ["s5"], name="split"),
        helper.make_node("Transpose", ["s5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "back"], ["s"]),
        helper.make_node("Conv", ["s", "dw", "db"], ["d"], group=channels, pads=[1] * 4),
        helper.make_node("Conv", ["d", "w2"], ["y"], group=second_groups, name="g2")]
    graph = helper.make_graph(
        nodes, "shuffle_unit", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=IR_VERSION)
    return onnxpress.compile(onnxpress.load(proto), "cleanup"), len(zeroed)


# C=16: the pieces lose row i's 4 channels (one in each GConv output group); after the
# shuffle rows 0-1 are g2's first group and rows 2-3 its second, so one row goes from each
# (at different columns of each group's filters). C=12, g=2 shuffle, g2=4 groups of 3:
# rows 1 and 4 straddle two groups, so they stay and rows 0, 2, 3, 5 go.
@pytest.mark.parametrize("channels,first,pieces,second,rows,ratio", [
    (16, 2, 4, 2, [1, 2], 0.5), (12, 2, 2, 4, [0, 2, 3, 5], 0.7)])
def test_grouped_convs_and_a_shuffle_are_cut_exactly(channels, first, pieces, second, rows,
                                                     ratio):
    """The pruned unit computes what the unit with those channels zeroed does: a channel
    mis-mapped through the shuffle or across a group boundary would change it."""
    model, count = _shuffle_unit(channels, first, pieces, second, rows,
                                 np.random.default_rng(channels))
    source = onnxpress.to_proto(model)
    result = Prune(ratio=ratio, multiple=1, refit=False)(model)
    assert result.stats["channels_removed"] == count, (result.stats, result.notes)
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    convs = {n.name: n for n in proto.graph.node if n.op_type == "Conv"}
    weights = {i.name: i.dims for i in proto.graph.initializer}
    assert weights[convs["g1"].input[1]][0] == channels - count
    assert weights[convs["g2"].input[1]][1] == (channels - count) // second
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, x), _run(source, x), atol=1e-5)


def test_a_shuffle_over_two_producers_is_blocked():
    """A shuffle of a Concat of two Convs' channels would tie positions across two groups:
    it is refused with its reason."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((4, 8, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "w2"),
             numpy_helper.from_array(np.array([1, 2, 4, 6, 6]), "split"),
             numpy_helper.from_array(np.array([1, 8, 6, 6]), "back")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="a"),
             helper.make_node("Conv", ["x", "w"], ["b"], name="b"),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Reshape", ["c", "split"], ["s5"], name="split"),
             helper.make_node("Transpose", ["s5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "back"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = onnxpress.compile(onnxpress.load(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)), "cleanup")
    with pytest.raises(BadInputError, match="shuffle at 'split' mixes channels of more than"):
        Prune(refit=False)(model)


def test_a_grouped_conv_reading_pruned_channels_is_left_unrefitted():
    """With calibration data, a grouped Conv's filters read different features per group,
    which the refit's one ``[outputs, features]`` matrix does not model: it is cut as is,
    with a note, and the result stays exact."""
    model, count = _shuffle_unit(16, 2, 4, 2, [1, 2], np.random.default_rng(16))
    source = onnxpress.to_proto(model)
    rng = np.random.default_rng(3)
    data = [{"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)} for _ in range(2)]
    result = Prune(ratio=0.5, multiple=1, data=data)(model)
    assert result.stats["channels_removed"] == count
    assert "Conv 'g2' is a grouped Conv; not compensated" in result.notes
    x = data[0]["x"]
    np.testing.assert_allclose(_run(onnxpress.to_proto(model), x), _run(source, x), atol=1e-5)
