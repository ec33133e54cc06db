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
    "from_torch": "onnxpress.frontends.torch_frontend",
    "to_proto": "onnxpress.backends.onnx_writer",
    "save": "onnxpress.backends.onnx_writer",
    "compile": "onnxpress.api",
    "compare": "onnxpress.api",
    "inspect": "onnxpress.api",
    "bench": "onnxpress.api",
    "evaluate": "onnxpress.evaluation",
    "search": "onnxpress.autotune.run",
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
    "evaluate",
    "from_torch",
    "inspect",
    "load",
    "save",
    "search",
    "to_proto",
]

if TYPE_CHECKING:
    from onnxpress.api import bench, compare, compile, inspect
    from onnxpress.autotune.run import search
    from onnxpress.backends.onnx_writer import save, to_proto
    from onnxpress.errors import BadInputError, CheckFailedError, OnnxpressError
    from onnxpress.evaluation import evaluate
    from onnxpress.frontends.onnx_loader import load
    from onnxpress.frontends.torch_frontend import from_torch
    from onnxpress.passes.calibration_data import CalibrationData
    from onnxpress.passes.manager import PassManager


_SUBPACKAGES = ("ir", "passes", "frontends", "backends", "models")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"onnxpress.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxpress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
