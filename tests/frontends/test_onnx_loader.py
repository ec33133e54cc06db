"""Loading from a path, bytes, a ModelProto; opset conversion; initializer inputs."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.models import small_cnn_path


def test_sources_agree() -> None:
    path = small_cnn_path()
    data = path.read_bytes()
    models = [onnxpress.load(path), onnxpress.load(data), onnxpress.load(onnx.load(path))]
    protos = [onnxpress.to_proto(m).SerializeToString() for m in models]
    assert protos[0] == protos[1] == protos[2]


def test_opset_conversion() -> None:
    model = onnxpress.load(small_cnn_path(), opset=18)
    assert model.opset_imports[""] == 18
    assert "opset converted from 17 to 18 by onnx's converter: outputs agree" in " ".join(
        model.meta["onnxpress.load_notes"])
    onnx.checker.check_model(onnxpress.to_proto(model), full_check=True)


def test_initializer_inputs_become_constants_unless_kept() -> None:
    light = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
    kept = onnxpress.load(light, keep_initializer_inputs=True)
    default = onnxpress.load(light)
    assert len(kept.graph.inputs) > 100
    assert [v.name for v in default.graph.inputs] == ["gpu_0/data_0"]
    onnx.checker.check_model(onnxpress.to_proto(default), full_check=True)


def test_wrong_source_type() -> None:
    with pytest.raises(BadInputError, match="cannot load a model from int"):
        onnxpress.load(3)


def test_external_data_threshold(tmp_path: Path) -> None:
    model = onnxpress.load(small_cnn_path())
    onnxpress.save(model, tmp_path / "inline.onnx")
    onnxpress.save(model, tmp_path / "split.onnx", external_threshold=1000)
    assert not (tmp_path / "inline.onnx.data").exists()
    assert (tmp_path / "split.onnx.data").stat().st_size > 1000
    reread = onnxpress.load(tmp_path / "split.onnx")
    assert onnxpress.to_proto(reread).SerializeToString() == onnxpress.to_proto(
        model).SerializeToString()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "split.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_saved_elsewhere_the_weights_come_along(tmp_path: Path) -> None:
    """A model loaded with external data and saved inline into another folder stands on its
    own (the input's data file may go), and carries no value_info copies of initializers."""
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir(), target.mkdir()
    onnxpress.save(onnxpress.load(small_cnn_path()), source / "m.onnx",
                   external_threshold=1000)
    model = onnxpress.load(source / "m.onnx")
    onnxpress.save(model, target / "m.onnx")
    del model
    (source / "m.onnx.data").unlink()
    proto = onnx.load(target / "m.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert not any(t.external_data for t in proto.graph.initializer)
    initializers = {t.name for t in proto.graph.initializer}
    assert not [v.name for v in proto.graph.value_info if v.name in initializers]
    assert onnxpress.to_proto(onnxpress.load(target / "m.onnx")).SerializeToString() == \
        onnxpress.to_proto(onnxpress.load(small_cnn_path())).SerializeToString()
