"""Small pieces every rewrite shares: domain names, how a node is named in a message, the
sweep of what a rewrite left unread, one node taking another's place, and shape inference
that is safe to run between rewrites. (What a Q/DQ node computes is read by
:mod:`onnxpress.ir.qdq`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxpress.ir.analysis import all_graphs
from onnxpress.ir.sizes import PROPAGATION_LIMIT, propagation_hazard

#: ONNX Runtime's contrib operators
MS_DOMAIN = "com.microsoft"
#: the standard operator set, as either spelling
STANDARD_DOMAINS = ("", "ai.onnx")


def is_standard(node: ir.Node) -> bool:
    return node.domain in STANDARD_DOMAINS


def describe(node: ir.Node) -> str:
    """``Conv '/features/0/Conv'``: how messages name a node."""
    return f"{node.op_type} {node.name!r}"


def is_unread(value: ir.Value) -> bool:
    """Nothing reads ``value``, and the graph neither takes nor gives it."""
    return not value.uses() and not value.is_graph_output() and not value.is_graph_input()


def remove_unread(values: Iterable[ir.Value | None], *,
                  producers: Collection[str] | None = ("Constant",)) -> None:
    """Remove what a rewrite left unread among ``values``: an initializer goes; a producing
    node goes when every output of it is unread and it is a standard ``producers`` op (None:
    any op), and then its own inputs are looked at in turn (a DQ's scale, a Transpose's
    weight). ``producers=()`` removes initializers only."""
    work = list(values)
    while work:
        value = work.pop()
        if value is None or not is_unread(value):
            continue
        if value.is_initializer() and value.graph is not None:
            del value.graph.initializers[value.name]
            continue
        node = value.producer()
        if node is None or node.graph is None or producers is not None and (
                node.op_type not in producers or node.domain not in STANDARD_DOMAINS):
            continue
        if all(not out.uses() and not out.is_graph_output() for out in node.outputs):
            work.extend(node.inputs)
            node.graph.remove(node, safe=True)


def replace_node(graph: ir.Graph, node: ir.Node, out: ir.Value) -> None:
    """``out`` (already placed) takes over ``node``'s only output: its readers, its name,
    shape and type, a graph output's place; then ``node`` goes."""
    old = node.outputs[0]
    ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
    name, old.name = old.name, f"{old.name}_float"
    out.name, out.shape, out.type = name, old.shape, old.type
    graph.remove(node, safe=True)


@dataclasses.dataclass
class InferenceResult(ir.passes.PassResult):
    """``notes``: why data propagation was left off, if it was, for the caller's report."""

    notes: list[str] = dataclasses.field(default_factory=list)


class TensorShapeInference(ir.passes.InPlacePass):
    """ONNX shape inference with data propagation, trusted for tensors only: with data
    propagation ONNX can type a sequence as a tensor (SplitToSequence), so outputs that may
    be sequences, maps or optionals keep the type they had.

    Data propagation runs only where it would not spell out a huge value
    (:func:`onnxpress.ir.sizes.propagation_hazard`, asked of the dims the graph carries,
    after a plain inference where they cannot tell); otherwise the plain inference stands
    and a note, opened with ``owner`` (the pass that asked), says why."""

    def __init__(self, owner: str = "shape inference") -> None:
        super().__init__()
        self.owner = owner

    def call(self, model: ir.Model) -> InferenceResult:
        opset = model.opset_imports.get("", 1)
        before = {
            value: (value.type, value.shape)
            for graph in all_graphs(model)
            for node in graph
            for index, value in enumerate(node.outputs)
            if _may_be_non_tensor(node, index, opset)
        }
        # inference that cannot see into a nested If's LSTM branch erases the type it had:
        # a subgraph output without a type fails onnx.checker (silero-vad after
        # static-shapes), so a type once known is kept
        typed = {value: value.type for graph in all_graphs(model) for node in graph
                 for value in node.outputs if value.type is not None}
        note = _infer(model)
        for value, (old_type, old_shape) in before.items():
            value.type, value.shape = old_type, old_shape
        for value, old_type in typed.items():
            if value.type is None:
                value.type = old_type
        notes = [f"{self.owner}: {note}"] if note else []
        return InferenceResult(model, modified=False, notes=notes)


def _infer(model: ir.Model) -> str | None:
    """Inference with data propagation where that is safe, else plain inference and why.
    Where the dims the graph carries cannot tell, a plain inference tells first; then the
    graph goes back to where it started, so that a safe model gets what data propagation
    alone gives (a second inference is a second serialisation: 3 s at 30,000 nodes)."""
    if propagation_hazard(model, unknown=True) is not None:
        start = {value: (value.type, value.shape) for graph in all_graphs(model)
                 for node in graph for value in node.outputs}
        ShapeInferencePass(strict_mode=False, data_prop=False)(model)
        hazard = propagation_hazard(model)
        if hazard is not None:
            node, value, length = hazard
            return (f"shapes inferred without data propagation: {describe(node)} reads "
                    f"{value.name!r}, a 1-D value of {length} elements "
                    f"(> {PROPAGATION_LIMIT}) that it would spell out")
        for value, (old_type, old_shape) in start.items():
            value.type, value.shape = old_type, old_shape
    ShapeInferencePass(strict_mode=False, data_prop=True)(model)
    return None


def _may_be_non_tensor(node: ir.Node, index: int, opset: int) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return True
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return True
    if index >= len(schema.outputs):
        index = len(schema.outputs) - 1
    type_str = schema.outputs[index].type_str
    allowed = next((c.allowed_type_strs for c in schema.type_constraints
                    if c.type_param_str == type_str), [type_str])
    return any(not t.startswith("tensor(") for t in allowed)
