"""``quantize``: static post-training quantization in QDQ form."""

from onnxpress.passes.quantize.static.quantize import Quantize

__all__ = ["Quantize"]
