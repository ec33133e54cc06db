"""``onnxpress evaluate``: top-1 accuracy from the model's own outputs, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxpress
from onnxpress.cli import main
from onnxpress.errors import BadInputError
from onnxpress.models import small_cnn_path


def _npz(tmp_path: Path, count: int = 50) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((count, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, count)
    path = tmp_path / "data.npz"
    np.savez(path, image=images, label=labels)
    return path, images, labels


def test_accuracy_matches_a_direct_computation(tmp_path: Path, capsys) -> None:
    path, images, labels = _npz(tmp_path)
    session = ort.InferenceSession(str(small_cnn_path()), providers=["CPUExecutionProvider"])
    expected = float(np.mean(session.run(None, {"image": images})[0].argmax(1) == labels))
    result = onnxpress.evaluate(small_cnn_path(), path, batch_size=7)
    assert result.metric == "top1_accuracy" and result.samples == 50
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert main(["evaluate", str(small_cnn_path()), "--data", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"top1_accuracy {expected:.4f}"


def test_bad_data_is_a_clear_error(tmp_path: Path) -> None:
    no_labels = tmp_path / "nolabels.npz"
    np.savez(no_labels, image=np.zeros((2, 1, 8, 8), np.float32))
    wrong_input = tmp_path / "wrong.npz"
    np.savez(wrong_input, pixels=np.zeros((2, 1, 8, 8), np.float32), label=np.zeros(2))
    with pytest.raises(BadInputError, match="no 'label' array"):
        onnxpress.evaluate(small_cnn_path(), no_labels)
    with pytest.raises(BadInputError, match="no array for model input 'image'"):
        onnxpress.evaluate(small_cnn_path(), wrong_input)
    with pytest.raises(BadInputError, match="no such data set"):
        onnxpress.evaluate(small_cnn_path(), tmp_path / "missing.npz")


def test_digits_shifted_is_the_split_under_nine_one_pixel_shifts():
    from onnxpress.models.datasets import load_dataset

    plain, shifted = load_dataset("digits"), load_dataset("digits-shifted")
    images, moved = plain.inputs["image"], shifted.inputs["image"]
    n = len(plain)
    assert len(shifted) == 9 * n and (shifted.labels == np.tile(plain.labels, 9)).all()
    np.testing.assert_array_equal(moved[4 * n : 5 * n], images)  # the unshifted copy
    # first copy: shifted by (-1, -1), so row 0 and column 0 are the zero fill
    np.testing.assert_array_equal(moved[:n, :, 1:, 1:], images[:, :, :-1, :-1])
    assert not moved[:n, :, 0, :].any() and not moved[:n, :, :, 0].any()
    np.testing.assert_array_equal(moved[8 * n :, :, :-1, :-1], images[:, :, 1:, 1:])
