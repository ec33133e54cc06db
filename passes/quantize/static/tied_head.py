"""A tied LM head made a plain weight, so that ``quantize`` stores one int8 table for it and
the embedding lookup.

A decoder that ties its output projection to its token embeddings is exported as
``Gather(table [V, H], ids)`` for the lookup and ``MatMul(x, Transpose(table))`` for the
head. The policy quantizes MatMuls with a constant weight; a Transpose of a shared table is
none (constant folding keeps it unfolded, as folding would copy the table), so the head, a
fifth of SmolLM2's prefill multiply-adds, stayed float beside an int8 copy made for the
lookup. Here the table is stored once in the head's layout, ``head = table^T [H, V]``: the
MatMul reads it as its weight, and each lookup becomes
``Transpose(Gather(head, ids, axis=1), [1, ..., r, 0])``, the same rows. Exact: it moves
bytes, nothing is computed. ``quantize`` then gives the head its int8 weight with a scale per
column (a scale per vocabulary entry: the table's row scale), and the lookups read that same
int8 copy (:mod:`.embeddings`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import STANDARD_DOMAINS, remove_unread, replace_node
from onnxpress.ir.layers import table_lookups, weight_source

__all__ = ["untie_heads"]


def untie_heads(graph: ir.Graph) -> int:
    """Store each tied table of the main graph in its head's layout; how many."""
    done = 0
    for node in list(graph):
        if node.op_type != "MatMul" or node.domain not in STANDARD_DOMAINS:
            continue
        source = weight_source(node.inputs[1])
        if source is None or source.via is None or source.perm != (1, 0):
            continue
        table, via = source.value, source.via
        lookups = table_lookups(table, graph)
        heads = [use.node for use in via.outputs[0].uses()]
        if (not lookups or len(source.tensor.shape) != 2
                or source.tensor.dtype != ir.DataType.FLOAT
                or any(user is not via and user not in lookups for user, _ in table.uses())
                or any(h.op_type != "MatMul" or h.domain not in STANDARD_DOMAINS
                       or h.inputs[0] is via.outputs[0] for h in heads)
                or via.outputs[0] in graph.outputs):
            continue
        array = constant_array(table)
        assert array is not None
        builder = Builder(graph)
        head = builder.initializer(np.ascontiguousarray(array.T), f"{table.name}_head")
        for reader in heads:
            reader.replace_input_with(1, head)
        for gather in lookups:
            ids = gather.inputs[1]
            assert ids is not None and ids.shape is not None
            rank = len(ids.shape)
            rows = Builder(graph)
            columns = rows.op("Gather", [head, ids], {"axis": 1}, name=f"{gather.name}_head")
            out = rows.op("Transpose", [columns], {"perm": [*range(1, rank + 1), 0]},
                          name=f"{gather.name}_rows")
            rows.insert_before(gather)
            replace_node(graph, gather, out)
        remove_unread([via.outputs[0], table], producers=("Transpose", "Constant"))
        done += 1
    return done
