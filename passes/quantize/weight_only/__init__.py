"""``weight-only``: blockwise int4/int8 weights, activations kept float."""

from onnxpress.passes.quantize.weight_only.weight_only import WeightOnly

__all__ = ["WeightOnly"]
