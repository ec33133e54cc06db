"""The quantization family, one subpackage per pass: ``calibrate`` (the observers every pass
calibrates with), ``static`` (``quantize``: QDQ insertion, its policy, budget, bias
correction, and the SmoothQuant migration of ``quantize(smooth=)``), ``smooth`` (the
``smooth`` pass), ``fold`` (``fold-qdq``), ``lower`` (``lower-qdq``) and ``weight_only``
(``weight-only``). Both smoothings take their factor from ``ir.quant_math``."""

from onnxpress.passes.quantize.fold import FoldQdq
from onnxpress.passes.quantize.lower import LowerQdq
from onnxpress.passes.quantize.smooth import Smooth
from onnxpress.passes.quantize.static import Quantize
from onnxpress.passes.quantize.weight_only import WeightOnly

__all__ = ["FoldQdq", "LowerQdq", "Quantize", "Smooth", "WeightOnly"]
