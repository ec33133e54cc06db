"""Checks of a model against what a runtime accepts; they report and change nothing."""

from __future__ import annotations

from onnxpress.passes.lint.tensorrt import LintTensorrt

__all__ = ["LintTensorrt"]
