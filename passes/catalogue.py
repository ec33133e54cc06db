"""Every built-in pass, by family: what ``PassRegistry.default()`` registers."""

from __future__ import annotations

from onnxpress.passes.base import Pass
from onnxpress.passes.cleanup import BUILTIN_PASSES as CLEANUP
from onnxpress.passes.lint import LintTensorrt
from onnxpress.passes.lowrank import LowRank
from onnxpress.passes.ort_fusion import FuseForOrt, OrtTransformers
from onnxpress.passes.prune import Prune
from onnxpress.passes.quantize.fold_qdq import FoldQdq
from onnxpress.passes.quantize.lower_qdq import LowerQdq
from onnxpress.passes.quantize.quantize import Quantize
from onnxpress.passes.quantize.smooth import Smooth
from onnxpress.passes.quantize.weight_only import WeightOnly
from onnxpress.passes.shapes import StaticShapes
from onnxpress.passes.tome import Tome

QUANTIZATION: tuple[type[Pass], ...] = (Smooth, Quantize, FoldQdq, LowerQdq, WeightOnly)
PRUNING: tuple[type[Pass], ...] = (Prune,)
LOW_RANK: tuple[type[Pass], ...] = (LowRank,)
TOKENS: tuple[type[Pass], ...] = (Tome,)
RUNTIME: tuple[type[Pass], ...] = (FuseForOrt, OrtTransformers, StaticShapes, LintTensorrt)
BUILTIN_PASSES: tuple[type[Pass], ...] = (*CLEANUP, *QUANTIZATION, *PRUNING, *LOW_RANK,
                                             *TOKENS, *RUNTIME)
