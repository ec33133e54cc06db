"""Reference models: builders with fixed seeds, and the embedded default model."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def default_model_path() -> Path:
    """The model ``onnxpress compile`` uses when no model is given."""
    return HERE / "default_cnn.onnx"
