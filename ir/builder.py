"""A builder for inserting subgraphs: record nodes on a tape, then place them in one step.

There is no insertion cursor: where the nodes go is an argument of ``insert_before`` /
``append``, so a rewrite first builds everything it needs, then mutates the graph once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir


class Builder:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self._tape = ir.tape.Tape()

    @property
    def nodes(self) -> Sequence[ir.Node]:
        return self._tape.nodes

    def op(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attributes: Mapping[str, Any] | None = None,
        *,
        domain: str = "",
        name: str | None = None,
    ) -> ir.Value:
        return self._tape.op(op_type, inputs, attributes, domain=domain, name=name)

    def op_multi(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        attributes: Mapping[str, Any] | None = None,
        *,
        num_outputs: int,
        domain: str = "",
        name: str | None = None,
    ) -> Sequence[ir.Value]:
        return self._tape.op_multi_out(op_type, inputs, attributes, num_outputs=num_outputs,
                                       domain=domain, name=name)

    def initializer(self, array: np.ndarray, name: str) -> ir.Value:
        """A new initializer of the graph, named ``name`` or ``name_1``, ``name_2``, ..."""
        unique, counter = name, 0
        taken = self.graph.initializers
        while unique in taken:
            counter += 1
            unique = f"{name}_{counter}"
        tensor = ir.tensor(np.ascontiguousarray(array).reshape(array.shape), name=unique)
        value = ir.Value(
            name=unique,
            shape=ir.Shape(array.shape),
            type=ir.TensorType(tensor.dtype),
            const_value=tensor,
        )
        self.graph.register_initializer(value)
        return value

    def insert_before(self, anchor: ir.Node) -> None:
        self.graph.insert_before(anchor, self._tape.nodes)

    def insert_after(self, anchor: ir.Node | None) -> None:
        """After ``anchor``; at the start of the graph when it is None (a graph input)."""
        if anchor is not None:
            self.graph.insert_after(anchor, self._tape.nodes)
        elif len(self.graph):
            self.graph.insert_before(self.graph.node(0), self._tape.nodes)
        else:
            self.append()

    def append(self) -> None:
        self.graph.extend(self._tape.nodes)
