"""Kept for the scripts that import it here; the exporter lives in the torch frontend."""

from onnxpress.frontends.torch_export import export_onnx

__all__ = ["export_onnx"]
