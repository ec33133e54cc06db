"""If nodes and their branches: which values live inside which If, and a model specialised
to the branches some inputs take (each If replaced by the nodes of its chosen branch).

A specialised copy is how values inside an If body are observed: ONNX Runtime cannot
return a subgraph's value, but once the branch the data takes is inlined, its values are
main-graph values like any other, with the same names. Loop and Scan bodies run many
times per call and have no such single value; they are not specialised.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

import onnx_ir as ir

IF_BRANCHES = ("then_branch", "else_branch")
#: the name given to an unnamed If (in copies only), by its order in the model
UNNAMED_IF = "onnxpress_if_{}"


def if_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every If in ``graph`` and, recursively, in the branches of its Ifs."""
    for node in graph:
        if node.op_type == "If" and node.domain in ("", "ai.onnx"):
            yield node
            for body in branches(node):
                yield from if_nodes(body)


def branches(node: ir.Node) -> list[ir.Graph]:
    return [node.attributes[name].as_graph() for name in IF_BRANCHES
            if name in node.attributes]


def loop_body_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Nodes inside Loop and Scan bodies (and anything nested in them), following If
    branches on the way."""
    for node in graph:
        if node.op_type == "If" and node.domain in ("", "ai.onnx"):
            for body in branches(node):
                yield from loop_body_nodes(body)
            continue
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from attr.as_graph().all_nodes()
            elif attr.type == ir.AttributeType.GRAPHS:
                for body in attr.as_graphs():
                    yield from body.all_nodes()


def layers_in_bodies(model: ir.Model, ops: Collection[str]) -> str:
    """"4 Conv, 2 Gemm" for the ``ops`` nodes inside If/Loop/Scan bodies; "" when none: what
    a pass that does not visit bodies says when it finds nothing in the main graph."""
    counts: dict[str, int] = {}
    for node in model.graph.all_nodes():
        if node.graph is not model.graph and node.op_type in ops:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))


def branch_values(node: ir.Node) -> set[str]:
    """Names of the values computed inside ``node``'s branches, nested Ifs' included."""
    names = set()
    for body in branches(node):
        for inner in body.all_nodes():
            names.update(v.name for v in inner.outputs if v.name)
        names.update(body.initializers)
    return names


def name_ifs(model: ir.Model) -> None:
    """Give every unnamed If a name by its order in the model, so that copies of one model
    agree on which If is which."""
    for index, node in enumerate(if_nodes(model.graph)):
        if not node.name:
            node.name = UNNAMED_IF.format(index)


def copy_model(model: ir.Model) -> ir.Model:
    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    name_ifs(copy)
    return copy


def inline_branch(node: ir.Node, then: bool) -> None:
    """Replace the If ``node`` by the nodes of one branch, in its own graph."""
    graph = node.graph
    assert graph is not None
    body = node.attributes[IF_BRANCHES[0 if then else 1]].as_graph()
    inner = list(body)
    body.remove(inner, safe=False)
    graph.insert_before(node, inner)
    for name in list(body.initializers):
        value = body.initializers.pop(name)
        graph.register_initializer(value)
    results = list(body.outputs)
    body.outputs.clear()  # a value is the output of one graph at a time
    for out, result in zip(node.outputs, results):
        out.replace_all_uses_with(result, replace_graph_outputs=True)
    graph.remove(node, safe=True)


def specialise(model: ir.Model, decisions: Mapping[str, bool]) -> list[ir.Node]:
    """Inline, in ``model`` (a copy from ``copy_model``), the branch ``decisions`` names for
    each If of the main graph, then for the Ifs that brings into it, and so on; the main
    graph's Ifs left undecided."""
    while True:
        decided = [n for n in model.graph if n.op_type == "If" and n.name in decisions]
        if not decided:
            return [n for n in model.graph if n.op_type == "If"]
        for node in decided:
            inline_branch(node, decisions[node.name])


def reaching(ifs: Collection[ir.Node], wanted: Collection[str]) -> list[ir.Node]:
    """The Ifs whose branches compute some of ``wanted``."""
    return [node for node in ifs if branch_values(node) & set(wanted)]
