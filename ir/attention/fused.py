"""ONNX Runtime's fused ``com.microsoft.Attention`` (what ``fuse-for-ort`` writes) read as
heads: a head is ``head_size`` columns in each of the packed Q, K and V parts of the weight
and bias, and the same rows of the output projection (the MatMul or Gemm reading the
Attention output). What head pruning cuts and what a search offers it on."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.edit import MS_DOMAIN
from onnxpress.ir.layers import linear_layer

__all__ = ["FusedBlock", "fused_blocks"]


@dataclasses.dataclass
class FusedBlock:
    attention: ir.Node
    projection: ir.Node  # MatMul/Gemm reading the Attention output as its input 0
    heads: int
    head_size: int

    def spans(self) -> list[slice]:
        return [slice(h * self.head_size, (h + 1) * self.head_size) for h in range(self.heads)]


def fused_blocks(graph: ir.Graph) -> tuple[list[FusedBlock], list[str]]:
    """The Attention blocks whose heads can be cut, and a note per one that cannot."""
    found, notes = [], []
    for node in graph:
        if node.op_type != "Attention" or node.domain != MS_DOMAIN:
            continue
        reason = _unsupported(node)
        uses = list(node.outputs[0].uses())
        projection = uses[0].node if len(uses) == 1 else None
        if reason is None and (projection is None or projection.op_type not in (
                "MatMul", "Gemm") or uses[0].idx != 0 or constant_array(
                projection.inputs[1]) is None or linear_layer(projection).out_axis == 0):
            reason = "its output is not read by one projection with a constant weight"
        if reason is not None:
            notes.append(f"Attention {node.name!r}: {reason}; its heads are kept")
            continue
        weight = constant_array(node.inputs[1])
        assert weight is not None and projection is not None
        heads = node.attributes.get_int("num_heads", 1)
        found.append(FusedBlock(node, projection, heads, weight.shape[1] // 3 // heads))
    return found, notes


def _unsupported(node: ir.Node) -> str | None:
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or weight.ndim != 2:
        return "its Q/K/V weight is not a constant matrix"
    if node.attributes.get("qkv_hidden_sizes") is not None:
        return "Q, K and V have different sizes (qkv_hidden_sizes)"
    if len(node.inputs) > 2 and node.inputs[2] is not None and constant_array(
            node.inputs[2]) is None:
        return "its bias is computed"
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return "it returns its present key/value state"
    return None
