"""A read-only networkx view of a graph, for analyses that want graph algorithms."""

from __future__ import annotations

import networkx as nx
import onnx_ir as ir


def to_networkx(graph: ir.Graph) -> nx.MultiDiGraph:
    """Nodes of the view are the IR nodes; an edge ``producer -> consumer`` per use, keyed
    by the value and carrying ``value`` and ``index`` (the consumer's input slot).

    Graph inputs and initializers are not nodes; a node that reads one has it in
    ``graph.nodes[node]["inputs"]``. Subgraph bodies are not expanded. The view is a copy:
    changing it does not change the IR.
    """
    view = nx.MultiDiGraph()
    for node in graph:
        view.add_node(node, op_type=node.op_type, domain=node.domain, name=node.name)
    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is None:
                continue
            producer = value.producer()
            if producer is not None and producer.graph is graph:
                view.add_edge(producer, node, key=value.name, value=value, index=index)
    return view
