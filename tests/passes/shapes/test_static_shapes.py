"""``static-shapes``: symbolic input dims become static (by name, as the batch, or from the
data), shapes are inferred again, and the outputs stay bit-identical (ONNX Runtime's graph
optimisations off on both sides: with static shapes it may pick other kernels, which round
differently); what cannot be resolved stays dynamic and is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pass_checks import EXACT, IR_VERSION, check_pass

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.passes.shapes import StaticShapes

MODELS = Path(onnxpress.models.__file__).parent
IMAGES = np.load(MODELS / "digits_test.npz")["image"][:4]


def _run(model: onnxpress.ir.Model | Path, feeds: dict, tmp_path: Path, name: str
         ) -> np.ndarray:
    path = model
    if not isinstance(model, Path):
        path = tmp_path / f"{name}.onnx"
        onnxpress.save(model, path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, options).run(None, feeds)[0]


def test_the_batch_becomes_static_and_the_outputs_stay_identical(tmp_path: Path) -> None:
    checked = check_pass("static-shapes(batch=4),cleanup", MODELS / "digits_vit.onnx",
                         {"image": IMAGES}, tolerance=EXACT, counts={"Shape": 0})
    model, report = checked.model, checked.report
    (value,) = model.graph.inputs
    assert list(value.shape.dims) == [4, 1, 8, 8]
    assert all(out.shape is not None and out.shape.is_static() for out in model.graph.outputs)
    assert report.passes[0].stats == {"fixed": 1}


def test_text_dims_come_from_the_data_or_stay_dynamic(minilm_path: Path, tmp_path: Path) -> None:
    from onnxpress.models.minilm import tokenize

    feeds = tokenize(["a cat sat on the mat"], pad_to=16)
    model = onnxpress.compile(minilm_path, "static-shapes,cleanup", calibration=[feeds])
    assert all(list(v.shape.dims) == [1, 16] for v in model.graph.inputs)
    # cleanup folds MiniLM's constants in another order than ORT would: compare against it
    reference = _run(onnxpress.compile(minilm_path, "cleanup"), feeds, tmp_path, "cleanup")
    np.testing.assert_array_equal(_run(model, feeds, tmp_path, "static"), reference)

    model = onnxpress.load(minilm_path)
    result = StaticShapes(batch=2)(model)
    assert all(v.shape.dims[0] == 2 and not isinstance(v.shape.dims[1], int)
               for v in model.graph.inputs)
    assert any("axis 1" in note and "stays dynamic" in note for note in result.notes)
    named = onnxpress.load(minilm_path)
    StaticShapes(dims="sequence=32")(named)
    assert all(list(v.shape.dims) == [1, 32] for v in named.graph.inputs)


@pytest.mark.parametrize("options", [{"dims": "sequence"}, {"dims": "sequence=0"},
                                     {"batch": 0}])
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(BadInputError, match="static-shapes"):
        StaticShapes(**options)


def test_a_static_batch_model_is_evaluated_in_its_batch_size() -> None:
    """450 test images in batches of 4: the last batch is padded and cut back."""
    model = onnxpress.compile(MODELS / "digits_cnn.onnx", "static-shapes(batch=4),cleanup")
    static = onnxpress.evaluate(model, "digits")
    assert static.samples == 450
    assert static.value == onnxpress.evaluate(MODELS / "digits_cnn.onnx", "digits").value


def test_an_unnamed_dynamic_dim_is_not_given_a_name_to_fix() -> None:
    """A dim with neither a size nor a name (silero-vad's ``state[2, ?, 128]``): the note
    asks for a sample, not for ``dims='None=N'``, which could never match."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, None, 4])
    x.type.tensor_type.shape.dim[1].Clear()  # no dim_value, no dim_param
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model = onnxpress.load(proto)
    result = StaticShapes()(model)
    (note,) = [n for n in result.notes if "axis 1" in n]
    assert "no name" in note and "--calibration" in note and "None=" not in note


def test_an_output_behind_an_if_keeps_a_shape_and_the_file_stays_valid() -> None:
    """silero-vad: inference cannot tell the shape of an If whose branches differ, so the
    main graph output lost its shape when static-shapes inferred again, and onnx.checker
    refused the file ("Field 'shape' of 'type' is required")."""
    def branch(name: str, nodes: list) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_y", TensorProto.FLOAT, None)])

    shape = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"],
                          then_branch=branch("then", [helper.make_node("Identity", ["x"],
                                                                       ["then_y"])]),
                          else_branch=branch("else", [helper.make_node("Reshape", ["x", "flat"],
                                                                       ["else_y"])]))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [shape])
    proto = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    out = onnxpress.to_proto(onnxpress.compile(proto, "static-shapes"))
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    onnx.checker.check_model(out)
