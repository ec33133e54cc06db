"""Removing ``Identity`` nodes without losing a graph output.

onnx_ir's IdentityEliminationPass renames the input after the output, which drops a graph
output when the input is itself a graph output (``y = Identity(a)`` with ``a`` and ``y``
both outputs). Here an Identity stays exactly when the graph needs it to keep two output
names apart, or to expose a graph input, an initializer or an outer-scope value as an
output.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxpress.ir.analysis import all_graphs


def remove_identities(model: ir.Model) -> int:
    removed = 0
    for graph in all_graphs(model):
        for node in list(graph):
            if node.op_type == "Identity" and node.domain in ("", "ai.onnx"):
                removed += _remove(graph, node)
    return removed


def _remove(graph: ir.Graph, node: ir.Node) -> int:
    source, target = node.inputs[0], node.outputs[0]
    if source is None:
        return 0
    if not target.is_graph_output():
        target.replace_all_uses_with(source)
        graph.remove(node, safe=True)
        return 1
    producer = source.producer()
    if (source.is_graph_output() or source.is_graph_input() or source.is_initializer()
            or producer is None or producer.graph is not graph):
        return 0
    # The source takes the output's place and name; its own users keep using it.
    name = target.name
    for index, output in enumerate(graph.outputs):
        if output is target:
            graph.outputs[index] = source
    target.replace_all_uses_with(source)
    graph.remove(node, safe=True)
    target.name = None
    source.name = name
    if source.type is None:
        source.type = target.type
    if source.shape is None:
        source.shape = target.shape
    return 1
