"""scikit-learn's digits set (8x8 grey images of 0-9) as float32 images, and its test file.

``load_digits()`` holds 1797 images. :func:`load_split` splits them once, stratified, into
1347 training and 450 test images; :func:`hold_out` then keeps a tenth of the training
images (134) out of training as a validation split, for choices made on data the models
never saw that are not the test images (``onnxpress search``). The files, so that
evaluation needs neither scikit-learn nor these splits: ``digits_test.npz`` (450),
``digits_validation.npz`` (134), ``digits_calibration.npz`` (128 of the 1213 images the
models train on).

scikit-learn is imported inside the functions only.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

TEST_NPZ = Path(__file__).with_name("digits_test.npz")
CALIBRATION_NPZ = Path(__file__).with_name("digits_calibration.npz")
VALIDATION_NPZ = Path(__file__).with_name("digits_validation.npz")
CALIBRATION_SAMPLES = 128

# A fixed zip timestamp (the earliest zip allows) keeps the .npz bytes reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` from scikit-learn's digits.

    Images are float32 ``[N, 1, 8, 8]`` = pixel values (0..16) / 16, so in ``[0, 1]``;
    labels are int64 ``[N]``. The split is ``train_test_split(test_size=0.25,
    random_state=seed, stratify=y)``: with the default ``seed=0``, 1347 training and 450
    test images (of 1797).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def hold_out(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_fit, y_fit, x_validation, y_validation)``: the last tenth of a seeded permutation
    of the training split is the validation split (134 of 1347), the rest (1213) what the
    models train on."""
    perm = np.random.default_rng(seed).permutation(len(x_train))
    cut = len(x_train) - len(x_train) // 10
    return x_train[perm[:cut]], y_train[perm[:cut]], x_train[perm[cut:]], y_train[perm[cut:]]


def shifted(images: np.ndarray) -> np.ndarray:
    """``images`` ``[N, C, H, W]`` under each of the nine one-pixel shifts (zero-filled) that
    training draws its augmentation from, shift-major: ``[9 N, C, H, W]``, the unshifted copy
    fifth. Nine times the test split in the distribution the models were trained on, so that
    differences of a few images (a fifth of a point on 450) can be told from noise."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = images.shape[2:]
    return np.concatenate([padded[:, :, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def savez_compressed(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes, but with fixed zip timestamps (byte-reproducible).

    ``np.savez_compressed`` stamps each member with the current time, so two runs differ in
    their bytes; ``np.load`` reads this file exactly as it reads one from ``savez_compressed``.
    Public because every committed ``.npz`` (digits, MiniLM texts) is written through it.
    """
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)


def write_test_npz(path: str | os.PathLike[str] = TEST_NPZ, seed: int = 0) -> Path:
    """Write the test split to ``path`` as a compressed .npz; return the path.

    Keys: ``image`` float32 ``[450, 1, 8, 8]`` and ``label`` int64 ``[450]`` (the input name
    of the digits models, and the key ``onnxpress evaluate`` reads labels from).
    """
    _, _, x_test, y_test = load_split(seed)
    path = Path(path)
    savez_compressed(path, {"image": x_test, "label": y_test})
    return path


def write_calibration_npz(
    path: str | os.PathLike[str] = CALIBRATION_NPZ, seed: int = 0,
    samples: int = CALIBRATION_SAMPLES,
) -> Path:
    """Write the first ``samples`` images the models train on to ``path`` (key ``image``):
    calibration data for quantizing the digits models that is neither the test nor the
    validation split."""
    x_train, y_train, _, _ = load_split(seed)
    x_fit, _, _, _ = hold_out(x_train, y_train, seed)
    path = Path(path)
    savez_compressed(path, {"image": x_fit[:samples]})
    return path


def write_validation_npz(path: str | os.PathLike[str] = VALIDATION_NPZ, seed: int = 0) -> Path:
    """Write the validation split (:func:`hold_out`) to ``path``: keys ``image`` and
    ``label``, as in the test file."""
    x_train, y_train, _, _ = load_split(seed)
    _, _, x_val, y_val = hold_out(x_train, y_train, seed)
    path = Path(path)
    savez_compressed(path, {"image": x_val, "label": y_val})
    return path


def describe_npz(path: Path) -> str:
    """One line: the file, its size and each array's shape (what the builders print)."""
    with np.load(path) as arrays:
        shapes = ", ".join(f"{key} {list(arrays[key].shape)}" for key in arrays.files)
    return f"{path} ({path.stat().st_size / 1024:.0f} KiB): {shapes}"
