"""Ordinary user errors are bad input (exit 2, one line), not "internal error" (issue 22,
T3): an unreadable model, an output folder that cannot be written, a folder, non-UTF-8
text or a too deeply nested file as config, a truncated calibration archive. The tests run
as root here, where permissions do not stop a read, so the OS errors are raised by the
calls they stand for."""

from __future__ import annotations

import builtins
import tempfile
from pathlib import Path

import numpy as np
import pytest

from onnxpress.cli import main
from onnxpress.models import small_cnn_path


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error" not in err[0], err
    return err[0]


def test_an_unreadable_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(small_cnn_path().read_bytes())
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if Path(str(file)) == model:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    assert main(["compile", str(model), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "cannot read the model (Permission denied)" in _one_line(capsys)


def test_an_output_folder_that_cannot_be_written(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["compile", str(small_cnn_path()), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "cannot write in" in _one_line(capsys)


@pytest.mark.parametrize("kind, match", [("folder", "is a folder"),
                                         ("latin1", "not UTF-8"),
                                         ("nested", "nested too deeply")])
def test_configs_that_are_no_config(kind: str, match: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.toml"
    if kind == "folder":
        config.mkdir()
    elif kind == "latin1":
        config.write_bytes('passes = "cleanup" # caf\xe9\n'.encode("latin-1"))
    else:
        config.write_text("x = " + "[" * 100000 + "]" * 100000 + "\n")
    assert main(["compile", str(small_cnn_path()), "-o", str(tmp_path / "o.onnx"),
                 "--config", str(config)]) == 2
    assert match in _one_line(capsys)


def test_a_truncated_calibration_archive(tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    whole = tmp_path / "whole.npz"
    np.savez(whole, image=np.zeros((4, 1, 8, 8), np.float32))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:300])
    assert main(["compile", str(small_cnn_path()), "-o", str(tmp_path / "o.onnx"),
                 "--passes", "cleanup,quantize", "--calibration", str(cut)]) == 2
    assert "not a readable .npz file" in _one_line(capsys)
