"""Multiply-accumulates of a graph's MatMul, Gemm and Conv nodes from their inferred
shapes, at batch 1 (a symbolic leading dimension counts as 1). Elementwise ops, norms and
softmax are left out: next to the products they are a few percent, and they have no single
agreed cost."""

from __future__ import annotations

import math

import onnx_ir as ir

PRODUCTS = frozenset({"MatMul", "Gemm", "Conv"})


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = [d if isinstance(d, int) else None for d in value.shape]
    if any(d is None for d in dims[1:]):
        return None
    return [1 if d is None else d for d in dims]


def node_macs(node: ir.Node) -> int | None:
    """The node's multiply-accumulates at batch 1, 0 for other ops, None when a shape it
    needs is unknown."""
    if node.op_type not in PRODUCTS or node.domain not in ("", "ai.onnx"):
        return 0
    out, first = _dims(node.outputs[0]), _dims(node.inputs[0])
    if out is None or first is None:
        return None
    if node.op_type == "MatMul":
        return math.prod(out) * first[-1]
    if node.op_type == "Gemm":
        return math.prod(out) * first[0 if node.attributes.get_int("transA", 0) else -1]
    weight = _dims(node.inputs[1])
    if weight is None:
        return None
    return math.prod(out) * math.prod(weight[1:])


def macs_by_section(graph: ir.Graph, ends: list[ir.Node]) -> list[int | None]:
    """Multiply-accumulates per section of the graph's node order: up to and including
    ``ends[0]``, then up to ``ends[1]``, ..., then the rest (``len(ends) + 1`` sections;
    None where a node's shape is unknown)."""
    boundaries = {node: i for i, node in enumerate(ends)}
    totals: list[int | None] = [0] * (len(ends) + 1)
    section = 0
    for node in graph:
        count = node_macs(node)
        current = totals[section]
        totals[section] = None if count is None or current is None else current + count
        if node in boundaries:
            section = boundaries[node] + 1
    return totals
