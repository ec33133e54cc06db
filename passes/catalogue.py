"""Every built-in pass, by family: what ``PassRegistry.default()`` registers."""

from __future__ import annotations

from onnxpress.passes.base import Pass
from onnxpress.passes.cleanup import BUILTIN_PASSES as CLEANUP
from onnxpress.passes.lint import LintTensorrt
from onnxpress.passes.lowrank import LowRank
from onnxpress.passes.ort_fusion import FuseForOrt, OrtTransformers
from onnxpress.passes.prune import Prune
from onnxpress.passes.quantize import FoldQdq, LowerQdq, Quantize, Smooth, WeightOnly
from onnxpress.passes.shapes import StaticShapes
from onnxpress.passes.tome import Tome

QUANTIZATION: tuple[type[Pass], ...] = (Smooth, Quantize, FoldQdq, LowerQdq, WeightOnly)
PRUNING: tuple[type[Pass], ...] = (Prune,)
LOW_RANK: tuple[type[Pass], ...] = (LowRank,)
TOKENS: tuple[type[Pass], ...] = (Tome,)
RUNTIME: tuple[type[Pass], ...] = (FuseForOrt, OrtTransformers, StaticShapes, LintTensorrt)
BUILTIN_PASSES: tuple[type[Pass], ...] = (*CLEANUP, *QUANTIZATION, *PRUNING, *LOW_RANK,
                                             *TOKENS, *RUNTIME)
