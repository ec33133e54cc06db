"""Structural invariants of the IR, cheap enough to check after every pass.

Checked, in the main graph, every subgraph and every model-local function:
- SSA: each value has one producer and each name is defined once in its graph;
- topological order: every input of a node is defined before it (graph inputs,
  initializers, earlier nodes, or values of an enclosing graph);
- use lists: a node's inputs and its inputs' ``uses()`` agree both ways;
- initializers: the tensor's dtype and shape agree with the value's declared type and shape;
- opsets: every node's domain is imported, and standard ops exist at the imported version;
- graph outputs: defined, and each listed once.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

_STANDARD = ("", "ai.onnx")


class VerificationError(ValueError):
    """The IR breaks an invariant; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


class _Checker:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.problems: list[str] = []
        self.schema_cache: dict[tuple[str, str, int], bool] = {}
        self.functions = set(model.functions)
        #: each value's recorded uses as a set, made once: a constant that 50,000 nodes
        #: read made a scan of its use list per reader quadratic (a 100,000-node chain)
        self.recorded: dict[ir.Value, set[tuple[ir.Node, int]]] = {}

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def check_graph(
        self, graph: ir.Graph | ir.Function, outer: frozenset[ir.Value], opsets: dict[str, int]
    ) -> None:
        scope = f"graph {graph.name!r}"
        visible: set[ir.Value] = set(outer)
        names: set[str] = set()
        for value in list(graph.inputs) + list(getattr(graph, "initializers", {}).values()):
            visible.add(value)
            if value.name:
                names.add(value.name)
        if isinstance(graph, ir.Graph):
            self.check_initializers(graph, scope)
        for node in graph:
            where = f"{scope} node {node.name or node.op_type!r} ({node.op_type})"
            self.check_node_inputs(node, visible, where)
            self.check_opset(node, opsets, where)
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    self.check_graph(attr.as_graph(), frozenset(visible), opsets)
                elif attr.type == ir.AttributeType.GRAPHS:
                    for sub in attr.as_graphs():
                        self.check_graph(sub, frozenset(visible), opsets)
            for output in node.outputs:
                if output.producer() is not node:
                    self.fail(where, f"output {output.name!r} names another producer")
                if output.name and output.name in names:
                    self.fail(where, f"value {output.name!r} is defined twice (not SSA)")
                names.add(output.name)
                visible.add(output)
                self.check_uses(output, where)
        seen_outputs: set[str | None] = set()
        for value in graph.outputs:
            if value not in visible:
                self.fail(scope, f"output {value.name!r} is not defined in the graph")
            if value.name in seen_outputs:
                self.fail(scope, f"output {value.name!r} is listed twice")
            seen_outputs.add(value.name)

    def check_node_inputs(self, node: ir.Node, visible: set[ir.Value], where: str) -> None:
        for index, value in enumerate(node.inputs):
            if value is None:
                continue
            if value not in visible:
                how = ("is used before it is defined (nodes out of order, or a cycle)"
                       if value.producer() is not None else "is defined nowhere")
                self.fail(where, f"input {index} {value.name!r} {how}")
            if value not in self.recorded:
                self.recorded[value] = {(use.node, use.idx) for use in value.uses()}
            if (node, index) not in self.recorded[value]:
                self.fail(where, f"input {index} {value.name!r} lacks the use in its use list")

    def check_uses(self, value: ir.Value, where: str) -> None:
        for user, index in value.uses():
            if index >= len(user.inputs) or user.inputs[index] is not value:
                self.fail(where, f"use list of {value.name!r} names a stale user {user.name!r}")

    def check_initializers(self, graph: ir.Graph, scope: str) -> None:
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is None:
                self.fail(scope, f"initializer {name!r} has no tensor")
                continue
            if value.dtype is not None and tensor.dtype != value.dtype:
                self.fail(scope, f"initializer {name!r} is {tensor.dtype}, declared {value.dtype}")
            if value.shape is not None and value.shape.is_static():
                if tuple(value.shape.dims) != tuple(tensor.shape.dims):
                    self.fail(
                        scope,
                        f"initializer {name!r} has shape {tensor.shape}, declared {value.shape}",
                    )
            self.check_uses(value, scope)

    def check_opset(self, node: ir.Node, opsets: dict[str, int], where: str) -> None:
        if node.op_identifier() in self.functions:
            return
        domain = "" if node.domain in _STANDARD else node.domain
        version = opsets.get(domain, opsets.get("ai.onnx") if domain == "" else None)
        if version is None:
            self.fail(where, f"domain {node.domain!r} is not in the model's opset imports")
            return
        if domain != "":
            return
        key = (node.op_type, domain, version)
        if key not in self.schema_cache:
            try:
                onnx.defs.get_schema(node.op_type, version, domain)
                self.schema_cache[key] = True
            except onnx.defs.SchemaError:
                self.schema_cache[key] = False
        if not self.schema_cache[key]:
            self.fail(where, f"{node.op_type} does not exist at opset {version}")


def verify(model: ir.Model) -> None:
    """Raise VerificationError listing every broken invariant; return None when all hold."""
    checker = _Checker(model)
    checker.check_graph(model.graph, frozenset(), dict(model.opset_imports))
    for function in model.functions.values():
        opsets = {**model.opset_imports, **function.opset_imports}
        checker.check_graph(function, frozenset(), opsets)
    if checker.problems:
        raise VerificationError(checker.problems)
