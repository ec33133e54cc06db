"""No file outside the job is written, and no file the job reads is overwritten (issue 22:
D1-D5, S2). Each refused command exits 2 with one line on stderr, leaves the input
files byte-identical and writes nothing else in the folder."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.external_data_helper import convert_model_to_external_data
from pass_checks import IR_VERSION

import onnxpress
from onnxpress.cli import main
from onnxpress.errors import BadInputError
from onnxpress.models import small_cnn_path


def _job(tmp_path: Path) -> Path:
    """The small CNN with its weights in ``weights.bin`` beside it."""
    folder = tmp_path / "job"
    folder.mkdir()
    model = folder / "model.onnx"
    onnx.save_model(onnx.load(small_cnn_path()), model, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return model


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
            for p in folder.iterdir()}


def _refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture, match: str) -> None:
    before = _snapshot(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert _snapshot(folder) == before  # nothing changed, nothing new


@pytest.mark.parametrize("flag", ["--report", "--ort-optimized"])
def test_a_second_output_over_the_input_model_is_refused(
        flag: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _job(tmp_path)
    _refused(["compile", str(model), "-o", str(model.parent / "out.onnx"), flag, str(model)],
             model.parent, capsys, "which this job reads")


@pytest.mark.parametrize("argv", [["-o", "weights.bin"], ["-o", "model.onnx"],
                                  ["-o", "out.onnx", "--report", "weights.bin"]])
def test_outputs_over_the_inputs_external_data_are_refused(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    model = _job(tmp_path)
    monkeypatch.chdir(model.parent)
    _refused(["compile", "model.onnx", *argv], model.parent, capsys, "which this job reads")


def test_an_output_named_after_the_inputs_sidecar_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """-o model.onnx.data where the input keeps its weights in model.onnx.data."""
    folder = tmp_path / "job"
    folder.mkdir()
    model = folder / "model.onnx"
    onnx.save_model(onnx.load(small_cnn_path()), model, save_as_external_data=True,
                    location="model.onnx.data", size_threshold=0)
    _refused(["compile", str(model), "-o", str(folder / "model.onnx.data")], folder, capsys,
             "which this job reads")


def test_a_planted_sidecar_link_is_not_written_through(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    model = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / "o.onnx.data").symlink_to(victim)
    _refused(["compile", str(model), "-o", str(out / "o.onnx")], out, capsys,
             "is a symbolic link")
    assert victim.read_bytes() == b"precious"
    # the API too, when the weights go to a sidecar
    with pytest.raises(BadInputError, match="symbolic link"):
        onnxpress.save(onnxpress.load(model), out / "o.onnx", external_data=True)
    assert victim.read_bytes() == b"precious" and not (out / "o.onnx").exists()


def test_a_fifo_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _job(tmp_path)
    fifo = tmp_path / "job" / "pipe.onnx"
    os.mkfifo(fifo)
    _refused(["compile", str(model), "-o", str(fifo)], model.parent, capsys,
             "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_an_overwritten_output_keeps_its_mode_and_a_new_one_follows_the_umask(
        tmp_path: Path) -> None:
    model = _job(tmp_path)
    private = model.parent / "private.onnx"
    private.write_bytes(b"old")
    private.chmod(0o600)
    assert main(["compile", str(model), "-o", str(private)]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    old = os.umask(0o022)
    try:
        fresh, optimized = model.parent / "fresh.onnx", model.parent / "fresh.ort.onnx"
        assert main(["compile", str(model), "-o", str(fresh), "--ort-optimized",
                     str(optimized)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    assert stat.S_IMODE(optimized.stat().st_mode) == 0o644


def test_the_check_reads_external_weights_from_the_models_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check from another working directory (issue 22, C2): its sessions are made from
    bytes, which used to keep the weights' relative location and so resolve it against the
    working directory: without a file there the check failed, with a decoy it compared the
    decoy. A decoy of another size, there, must not matter."""
    model = _job(tmp_path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(b"\0" * 64)
    monkeypatch.chdir(elsewhere)
    report = tmp_path / "r.json"
    assert main(["compile", str(model), "-o", str(tmp_path / "o.onnx"), "--check",
                 "--report", str(report)]) == 0
    assert '"ok": true' in report.read_text()


def _weights(path: Path) -> dict[str, np.ndarray]:
    """The model's initializers as it loads, with its sidecar (fails on a mismatched pair:
    offsets past the end, or a length that disagrees)."""
    proto = onnx.load(str(path))
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_the_model_and_its_sidecar_are_replaced_as_a_pair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D3: at every rename, a kill would leave the old pair, no model, or the new pair;
    never the old model beside the new sidecar. And no temporary file is left after."""
    model = onnxpress.load(small_cnn_path())
    out = tmp_path / "o.onnx"
    onnxpress.save(model, out, external_data=True)
    old = _weights(out)
    for value in model.graph.initializers.values():
        if value.const_value.dtype == onnx_ir.DataType.FLOAT:
            value.const_value = onnx_ir.tensor(value.const_value.numpy() * 2 + 1)
    new = {name: v.const_value.numpy() for name, v in model.graph.initializers.items()}
    states = []
    real_replace = os.replace

    def replace(source, target):  # every rename, onnx_ir's of the sidecar's temporary too
        if not out.exists():
            states.append("no model")
        else:
            try:
                now = _weights(out)
            except Exception:  # noqa: BLE001 - a pair that does not load is what we look for
                now = {}
            states.append("old" if _equal(now, old) else "new" if _equal(now, new)
                          else "mismatch")
        real_replace(source, target)

    monkeypatch.setattr("onnxpress.backends.files.os.replace", replace)
    onnxpress.save(model, out, external_data=True)
    monkeypatch.undo()
    assert "mismatch" not in states and states[-2:] == ["no model", "no model"], states
    assert _equal(_weights(out), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx", "o.onnx.data"]


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_removes_the_temporary_files_and_keeps_the_old_output(
        signum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture) -> None:
    """D3: SIGTERM/SIGHUP while the pair is being written (both temporary files full):
    exit 128 + the signal, one line, the previous output intact, nothing else left."""
    model = _job(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.onnx"
    monkeypatch.setattr("onnxpress.backends.onnx_writer.EXTERNAL_DATA_THRESHOLD", 0)
    assert main(["compile", str(model), "-o", str(out)]) == 0
    capfd.readouterr()
    before, inputs = _snapshot(out_dir), _snapshot(model.parent)
    handler = signal.getsignal(signum)  # SIG_IGN under nohup: what was there comes back
    real_chmod = os.chmod

    def chmod(path, mode):  # after the writes, before the renames
        real_chmod(path, mode)
        os.kill(os.getpid(), signum)

    monkeypatch.setattr("onnxpress.backends.files.os.chmod", chmod)
    assert main(["compile", str(model), "-o", str(out)]) == 128 + signum
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"stopped by {signal.Signals(signum).name}" in err[0], err
    assert _snapshot(out_dir) == before and _snapshot(model.parent) == inputs
    assert signal.getsignal(signum) == handler


def _external_attribute_model(folder: Path) -> Path:
    """A Constant's value and an If body's initializer, both in ``w.bin``."""
    constant = onnx.numpy_helper.from_array(np.full((8, 8), 2, np.float32), "cval")
    bias = onnx.numpy_helper.from_array(np.full((8,), 3, np.float32), "bias")
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=constant),
         helper.make_node("MatMul", ["x", "k"], ["t0"]),
         helper.make_node("Add", ["t0", "bias"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 8])], [bias])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 8])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    model = helper.make_model(graph, ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", 17)])
    convert_model_to_external_data(model, location="w.bin", size_threshold=0,
                                   convert_attribute=True)
    path = folder / "m.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("external", [False, True])
def test_outputs_in_another_folder_carry_every_external_tensor(
        external: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D4: a Constant's external value and an If body's external initializer used to keep
    their location relative to the input's folder, so the output did not load."""
    source = tmp_path / "in"
    source.mkdir()
    model = _external_attribute_model(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if external:
        monkeypatch.setattr("onnxpress.backends.onnx_writer.EXTERNAL_DATA_THRESHOLD", 0)
    feeds = {"x": np.arange(16, dtype=np.float32).reshape(2, 8), "cond": np.array(True)}
    want = ort.InferenceSession(str(model)).run(None, feeds)[0]
    inputs = _snapshot(source)
    for passes in ("dce", "cleanup"):
        out = out_dir / f"{passes}.onnx"
        assert main(["compile", str(model), "-o", str(out), "--passes", passes]) == 0
        got = ort.InferenceSession(str(out)).run(None, feeds)[0]
        np.testing.assert_array_equal(got, want)
    assert _snapshot(source) == inputs
    assert not (out_dir / "w.bin").exists()


@pytest.mark.parametrize("large", [False, True])
def test_temporary_files_live_beside_the_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 large: bool) -> None:
    """"The job" is its inputs, its outputs and temporary files in the output folder:
    nothing goes to the system's temporary folder, and nothing is left anywhere. ``large``:
    as for a model past ``IN_MEMORY_BYTES``, whose snapshot and every ONNX Runtime session
    go through files."""
    if large:
        monkeypatch.setattr("onnxpress.backends.ort_runner.IN_MEMORY_BYTES", 1)
        monkeypatch.setattr("onnxpress.passes.manager.IN_MEMORY_BYTES", 1)
    model = _job(tmp_path)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    made = []
    for name in ("mkdtemp", "mkstemp"):
        real = getattr(tempfile, name)

        def record(*args, _real=real, **kwargs):
            found = _real(*args, **kwargs)
            made.append(Path(found if isinstance(found, str) else found[1]).parent)
            return found

        monkeypatch.setattr(tempfile, name, record)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    inputs = _snapshot(model.parent)
    assert main(["compile", str(model), "-o", str(out_dir / "o.onnx"), "--check",
                 "--report", str(out_dir / "r.json"), "--ort-optimized",
                 str(out_dir / "o.ort.onnx")]) == 0
    assert made and all(folder.resolve() != system_tmp.resolve() for folder in made), made
    assert not any(system_tmp.iterdir())
    assert sorted(_snapshot(out_dir)) == ["o.onnx", "o.ort.onnx", "r.json"]
    assert _snapshot(model.parent) == inputs
