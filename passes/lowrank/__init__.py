"""Low-rank factoring of weight layers, and low-rank compensation of other passes' error."""

from onnxpress.passes.lowrank.lowrank import LowRank

__all__ = ["LowRank"]
