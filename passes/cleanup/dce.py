"""``dce``: remove nodes, initializers, functions and opset imports nothing uses (bit-exact).

Composes onnx_ir's RemoveUnusedNodesPass (which also drops unused optional outputs, and the
main graph's unused initializers), RemoveUnusedFunctionsPass and RemoveUnusedOpsetsPass; then
removes the unused initializers of If/Loop/Scan bodies, which onnx_ir 1.1 leaves (folded
Constants inside a body became initializers there: silero-vad's If branches kept 1 MB of
them, and the file grew).
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

from onnxpress.ir.analysis import all_graphs
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup._wrapped import run_wrapped

__all__ = ["Dce"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Dce(Pass):
    name = "dce"
    visits_subgraphs = True

    def call(self, model: ir.Model) -> PassStats:
        initializers = len(model.graph.initializers)
        result = run_wrapped(
            model, [RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass()]
        )
        result.stats["initializers_removed"] = initializers - len(model.graph.initializers)
        bodies = [graph for graph in all_graphs(model) if graph is not model.graph]
        before = sum(len(graph.initializers) for graph in bodies)
        reachable = {model.graph, *bodies}
        for graph in bodies:
            for value in list(graph.initializers.values()):
                if not _read(value, reachable) and not value.is_graph_output() \
                        and not value.is_graph_input():
                    del graph.initializers[value.name]  # type: ignore[arg-type]
        removed = before - sum(len(graph.initializers) for graph in bodies)
        if removed:
            result.stats["initializers_removed"] += removed
            result.modified = True
        return result


def _read(value: ir.Value, reachable: set[ir.Graph]) -> bool:
    """Whether a node of the model reads ``value``. The body of a node a rewrite took out
    (an If folded on a constant condition) keeps its nodes and their uses of outer values,
    which serialization drops."""
    return any(use.node.graph in reachable for use in value.uses())
