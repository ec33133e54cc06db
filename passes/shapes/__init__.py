"""Shape passes: pin symbolic dimensions for runtimes that need static shapes."""

from onnxpress.passes.shapes.static_shapes import StaticShapes

__all__ = ["StaticShapes"]
