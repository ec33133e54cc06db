"""``dce``: remove nodes, initializers, functions and opset imports nothing uses (bit-exact).

Composes onnx_ir's RemoveUnusedNodesPass (which also drops unused optional outputs and
initializers, in subgraphs too), RemoveUnusedFunctionsPass and RemoveUnusedOpsetsPass.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir
from onnx_ir.passes.common import (
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
)

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup._wrapped import run_wrapped

__all__ = ["Dce"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Dce(Pass):
    name = "dce"

    def call(self, model: ir.Model) -> PassStats:
        initializers = len(model.graph.initializers)
        result = run_wrapped(
            model, [RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()]
        )
        result.stats["initializers_removed"] = initializers - len(model.graph.initializers)
        return result
