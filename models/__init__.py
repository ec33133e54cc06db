"""Reference models: builders with fixed seeds, the embedded default model (the trained
digits CNN) and the small redundant CNN the tests use."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def default_model_path() -> Path:
    """The model ``onnxpress compile`` uses when no model is given: the digits CNN, trained
    (100% top-1 on the 450 test digits), with the BatchNorms exporters leave."""
    return HERE / "digits_cnn.onnx"


def small_cnn_path() -> Path:
    """A small untrained CNN with the redundancy exporters leave (Identity, Dropout,
    BatchNorm, shape chains): the tests' model for lossless passes."""
    return HERE / "default_cnn.onnx"
