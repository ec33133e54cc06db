"""onnxpress: an ONNX graph-rewriting compiler.

Public names are loaded lazily (PEP 562) so that ``import onnxpress`` and the CLI stay
fast and torch is never imported until a frontend needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load": "onnxpress.frontends.onnx_loader",
    "to_proto": "onnxpress.backends.onnx_writer",
    "save": "onnxpress.backends.onnx_writer",
    "compile": "onnxpress.api",
    "compare": "onnxpress.api",
    "inspect": "onnxpress.api",
    "bench": "onnxpress.api",
    "PassManager": "onnxpress.passes.manager",
    "CalibrationData": "onnxpress.passes.calibration_data",
    "OnnxpressError": "onnxpress.errors",
    "BadInputError": "onnxpress.errors",
    "CheckFailedError": "onnxpress.errors",
}

__all__ = [
    "BadInputError",
    "CalibrationData",
    "CheckFailedError",
    "OnnxpressError",
    "PassManager",
    "__version__",
    "bench",
    "compare",
    "compile",
    "inspect",
    "load",
    "save",
    "to_proto",
]

if TYPE_CHECKING:
    from onnxpress.api import bench, compare, compile, inspect
    from onnxpress.backends.onnx_writer import save, to_proto
    from onnxpress.errors import BadInputError, CheckFailedError, OnnxpressError
    from onnxpress.frontends.onnx_loader import load
    from onnxpress.passes.calibration_data import CalibrationData
    from onnxpress.passes.manager import PassManager


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxpress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
