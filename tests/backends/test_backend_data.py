"""Every model in the ONNX wheel's backend test data (light, pytorch-converted,
pytorch-operator, simple):

- round trip (load -> save -> load) is lossless: onnx.checker accepts the saved file and
  ONNX Runtime's outputs on the bundled inputs are bit-identical to the original's, or
  both fail to load alike;
- ``cleanup`` keeps outputs within 1e-5 relative of the original's, and on the ``light_*``
  models leaves no BatchNormalization behind a Conv.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import onnxpress

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SUITES = ("light", "pytorch-converted", "pytorch-operator", "simple")
REL_TOLERANCE = 1e-5


def _cases() -> list[tuple[str, Path, Path | None]]:
    cases = []
    for suite in SUITES:
        for path in sorted((DATA / suite).glob("*.onnx")):  # light_*.onnx + output pb
            cases.append((f"{suite}/{path.stem}", path, None))
        for folder in sorted(p for p in (DATA / suite).iterdir() if p.is_dir()):
            model = folder / "model.onnx"
            if model.exists():
                cases.append((f"{suite}/{folder.name}", model, folder / "test_data_set_0"))
    return cases


CASES = _cases()


def _read_input(path: str, type_proto: onnx.TypeProto):
    data = Path(path).read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def _inputs(model_path: Path, data_dir: Path | None) -> dict:
    proto = onnx.load(model_path, load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    real_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if data_dir is not None:
        files = sorted(glob.glob(os.fspath(data_dir / "input_*.pb")),
                       key=lambda f: int(Path(f).stem.split("_")[1]))
        return {i.name: _read_input(f, i.type) for i, f in zip(real_inputs, files)}
    rng = np.random.default_rng(0)  # light_* models ship outputs only
    feeds = {}
    for value in real_inputs:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _run(model: bytes | str, feeds: dict):
    """(outputs, None) or (None, the load or run error's type name): an op this machine
    cannot run (StringNormalizer without the en_US locale, on older ONNX Runtimes) must
    fail alike before and after."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {k: v for k, v in feeds.items() if k in names}), None
    except Exception as error:  # ORT raises its own classes
        return None, type(error).__name__


def _equal(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_equal, a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a, b, equal_nan=a.dtype.kind in "fc")


def _close(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind not in "fc":
        return np.array_equal(a, b)
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite],
                                                                      equal_nan=True):
        return False
    if not finite.any():
        return True
    scale = np.abs(a[finite]).max()
    return np.abs(a[finite] - b[finite]).max() <= REL_TOLERANCE * scale + 1e-30


def test_the_data_is_there() -> None:
    assert len(CASES) > 100
    assert sum(name.startswith("light/") for name, _, _ in CASES) >= 8


@pytest.mark.parametrize(("name", "model_path", "data_dir"), CASES, ids=[c[0] for c in CASES])
def test_round_trip_is_lossless(name: str, model_path: Path, data_dir: Path | None,
                                tmp_path: Path) -> None:
    model = onnxpress.load(model_path, keep_initializer_inputs=True)
    saved = onnxpress.save(model, tmp_path / "model.onnx")
    reloaded = onnxpress.load(saved, keep_initializer_inputs=True)
    onnxpress.save(reloaded, tmp_path / "again.onnx")
    assert (tmp_path / "again.onnx").read_bytes() == saved.read_bytes()
    feeds = _inputs(model_path, data_dir)
    expected, expected_error = _run(os.fspath(model_path), feeds)
    got, got_error = _run(os.fspath(saved), feeds)
    assert got_error == expected_error
    if expected_error is None:
        onnx.checker.check_model(os.fspath(saved), full_check=True)
        assert all(map(_equal, expected, got)), name


@pytest.mark.parametrize(("name", "model_path", "data_dir"), CASES, ids=[c[0] for c in CASES])
def test_cleanup_keeps_outputs(name: str, model_path: Path, data_dir: Path | None) -> None:
    feeds = _inputs(model_path, data_dir)
    expected, error = _run(os.fspath(model_path), feeds)
    model = onnxpress.compile(onnxpress.load(model_path), "cleanup")
    onnxpress.ir.verify(model)
    proto = onnxpress.to_proto(model)
    got, got_error = _run(proto.SerializeToString(), feeds)
    assert got_error == error  # a model ONNX Runtime cannot load stays one it cannot load
    if error is None:
        onnx.checker.check_model(proto, full_check=True)
        assert all(map(_close, expected, got)), name
    if name.startswith("light/"):
        behind_conv = [
            n.name for n in model.graph
            if n.op_type == "BatchNormalization" and n.inputs[0].producer() is not None
            and n.inputs[0].producer().op_type == "Conv"
        ]
        assert behind_conv == []
