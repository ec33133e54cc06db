"""``lower-qdq``: QDQ groups to integer operators."""

from onnxpress.passes.quantize.lower.lower_qdq import LowerQdq

__all__ = ["LowerQdq"]
