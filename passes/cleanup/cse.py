"""``cse``: merge nodes that compute the same thing from the same inputs, and initializers
with identical contents (bit-exact).

onnx_ir's CommonSubexpressionEliminationPass does the nodes of the main graph, and of every
If/Loop/Scan body too, one body at a time (bodies are never merged with each other);
DeduplicateInitializersPass does the weights, capped so that large weights are never read
just to be compared.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateInitializersPass,
)

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup._wrapped import run_wrapped

__all__ = ["Cse"]


@dataclasses.dataclass(frozen=True)
class Cse(Pass):
    name = "cse"
    visits_subgraphs = True
    #: initializers with more elements than this are not compared
    max_dedup_elements: int = 1 << 20

    def call(self, model: ir.Model) -> PassStats:
        initializers = len(model.graph.initializers)
        declared = [(v.type, v.shape) for v in model.graph.outputs]
        result = run_wrapped(
            model,
            [
                DeduplicateInitializersPass(size_limit=self.max_dedup_elements),
                CommonSubexpressionEliminationPass(),
            ],
        )
        result.stats["initializers_merged"] = initializers - len(model.graph.initializers)
        # A merged duplicate can become a graph output; it must carry the declared type.
        for value, (kind, shape) in zip(model.graph.outputs, declared):
            value.type = value.type or kind
            value.shape = value.shape or shape
        for body in model.graph.subgraphs():
            # The public pass only visits a model's main graph; a model that merely holds
            # the body as its graph lets it visit the body in place.
            holder = ir.Model(body, ir_version=model.ir_version)
            result.modified |= CommonSubexpressionEliminationPass()(holder).modified
        return result
