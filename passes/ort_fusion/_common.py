"""What the ORT fusion rules share besides the graph readers of
:mod:`onnxpress.ir.attention.values`: the contrib domain, node labels, and the record of
why a candidate was declined (so the pass can say why a node stayed)."""

from __future__ import annotations

import onnx_ir as ir

from onnxpress.ir.edit import describe


def node_label(node: ir.Node | None) -> str:
    if node is None:
        return "?"
    return describe(node) if node.name else node.op_type


class Declines:
    """Why candidates were not fused, keyed by the node a rule anchors on. A rule may try a
    node several times (commuted variants); reasons for nodes a later rule rewrote are
    dropped by ``notes``, which reports only nodes still in the graph."""

    def __init__(self) -> None:
        self._reasons: dict[ir.Node, list[str]] = {}

    def record(self, node: ir.Node | None, reason: str) -> None:
        if node is None:
            return
        reasons = self._reasons.setdefault(node, [])
        if reason not in reasons:
            reasons.append(reason)

    def notes(self, what: str) -> list[str]:
        return [
            f"{what} at {node_label(node)} not fused: {'; '.join(reasons)}"
            for node, reasons in self._reasons.items()
            if node.graph is not None
        ]


def users_before(node: ir.Node, total: ir.Value, fused: set, label: str) -> str | None:
    """Why a fused node cannot take ``node``'s place, or None: a reader of the residual sum
    ``total`` (other than the ``fused`` nodes) comes before it in the graph."""
    users = {use.node for use in total.uses()} - fused
    for current in node.graph or ():
        if current is node:
            return None
        if current in users:
            return f"the sum is used by {current.op_type} before the {label}"
    return None
