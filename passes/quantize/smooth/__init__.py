"""``smooth``: SmoothQuant folded into the producers and readers of an activation."""

from onnxpress.passes.quantize.smooth.smooth import Smooth

__all__ = ["Smooth"]
