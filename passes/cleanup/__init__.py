"""The cleanup family: passes that make a graph smaller without changing what it computes."""

from __future__ import annotations

from onnxpress.passes.cleanup.batchnorm import FoldBatchNorm
from onnxpress.passes.cleanup.cleanup import Cleanup
from onnxpress.passes.cleanup.cse import Cse
from onnxpress.passes.cleanup.dce import Dce
from onnxpress.passes.cleanup.fold_constants import FoldConstants
from onnxpress.passes.cleanup.identity import EliminateIdentity
from onnxpress.passes.cleanup.shape_ops import FuseShapeOps

BUILTIN_PASSES = (Cleanup, Dce, FoldConstants, Cse, EliminateIdentity, FoldBatchNorm, FuseShapeOps)

__all__ = [
    "BUILTIN_PASSES",
    "Cleanup",
    "Cse",
    "Dce",
    "EliminateIdentity",
    "FoldBatchNorm",
    "FoldConstants",
    "FuseShapeOps",
]
