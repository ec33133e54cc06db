"""The layers ``lowrank`` may factor: MatMul / Gemm with a constant 2-D float weight, and
Conv with a constant float weight and ``group=1``, each with the statistics of its input
when the pass has calibration data."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.channel_groups import channel_groups
from onnxpress.ir.edit import describe
from onnxpress.ir.layers import as_matrix, features_of

#: features above which a layer's ``H`` (features^2 float64) is not gathered
MAX_FEATURES = 8192


@dataclasses.dataclass(eq=False)  # one per layer: hashed by identity
class Site:
    node: ir.Node
    weight: np.ndarray  # as stored
    gram: np.ndarray | None = None  # sum of x x^T over ``count`` feature rows
    count: int = 0

    @property
    def matrix(self) -> np.ndarray:
        """The weight as ``[outputs, features]``, float64."""
        return np.asarray(as_matrix(self.node, self.weight), np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        outputs, features = as_matrix(self.node, self.weight).shape
        return outputs, features

    @property
    def label(self) -> str:
        return f"{self.node.op_type} {self.node.name!r}"

    def statistics(self) -> np.ndarray | None:
        """``E[x x^T]`` of the layer's input features, when measured."""
        return None if self.gram is None or not self.count else self.gram / self.count

    def __call__(self, x: np.ndarray) -> None:
        rows = features_of(self.node, np.asarray(x, np.float64))
        term = rows.T @ rows
        self.gram = term if self.gram is None else self.gram + term
        self.count += len(rows)


def find(graph: ir.Graph, ops: set[str], exclude: set[str], mlp_only: bool,
         min_elements: int) -> tuple[list[Site], list[str]]:
    """The factorable layers in graph order, and a note for each weight layer left out."""
    allowed = _mlp_layers(graph) if mlp_only else None
    sites, notes = [], []
    for node in graph:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        weight = constant_array(node.inputs[1])
        label = describe(node)
        if weight is None and (node.op_type != "MatMul" or node.inputs[1].is_initializer()):
            notes.append(f"{label} kept: its weight is not a constant (a graph input, or "
                         "computed)")
            continue
        if weight is None or constant_array(node.inputs[0]) is not None:
            continue  # not a weight layer (attention's MatMuls), or constant-folded away
        reason = _unsupported(node, weight)
        if allowed is not None and node not in allowed:
            continue
        if node.name in exclude:
            reason = "excluded"
        elif reason is None and weight.size < min_elements:
            reason = f"{weight.size} weights, fewer than min_elements={min_elements}"
        if reason:
            notes.append(f"{label} kept: {reason}")
        else:
            sites.append(Site(node, weight))
    return sites, notes


def _unsupported(node: ir.Node, weight: np.ndarray) -> str | None:
    if weight.dtype != np.float32:
        return f"weight is {weight.dtype}, not float32"
    if node.op_type == "Conv":
        if node.attributes.get_int("group", 1) != 1:
            return "grouped Conv"
        return None if weight.ndim >= 3 else "Conv weight is not [O, C, k...]"
    if weight.ndim != 2:
        return f"weight has {weight.ndim} dimensions, not 2"
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return "Gemm with transA=1"
    return None


def _mlp_layers(graph: ir.Graph) -> set[ir.Node]:
    """The layers writing or reading a transformer MLP's hidden width: the producers and
    consumers of the prunable Gemm/MatMul channel groups."""
    return {item.node for group in channel_groups(graph)
            if group.kind == "linear" and not group.blocked
            for item in group.slices if item.role in ("producer", "consumer")}
