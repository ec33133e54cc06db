"""Pruning: structured (channels, MLP width) with dependency groups, and weight sparsity."""

from onnxpress.passes.prune.prune import Prune

__all__ = ["Prune"]
