"""No file outside the job is written, and no file the job reads is overwritten (issue 22:
D1, D2, D5, S2). Each refused command exits 2 with one line on stderr, leaves the input
files byte-identical and writes nothing else in the folder."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import onnx
import pytest

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
