"""``fold-qdq``: exact tidying of QuantizeLinear / DequantizeLinear pairs."""

from onnxpress.passes.quantize.fold.fold_qdq import FoldQdq

__all__ = ["FoldQdq"]
