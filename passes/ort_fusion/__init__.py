"""Fusions for ONNX Runtime: exporter patterns -> the fused ops ORT runs fast."""

from __future__ import annotations

from onnxpress.passes.ort_fusion.fuse import FuseForOrt
from onnxpress.passes.ort_fusion.transformers import OrtTransformers

__all__ = ["FuseForOrt", "OrtTransformers"]
