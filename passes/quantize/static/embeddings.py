"""Embedding tables as int8 rows: ``Gather(table, ids)`` ->
``Mul(Cast(Gather(table_q, ids)), Unsqueeze(Gather(scales, ids)))``.

A transformer's word embeddings are half of a small model's file (MiniLM: 47 of 87 MB) and
no kernel quantizes them: ``quantize`` leaves Gather alone. Each row is stored as symmetric
int8 with its own scale (rows are looked up whole, so a per-row scale costs one float per
token), and only the looked-up rows are dequantized at run time. ``DequantizeLinear -> Gather``
would be the textbook form, but ONNX Runtime does not fold a DequantizeLinear of an
initializer: it would dequantize all 30522 rows on every run.

Lossy: each element is off by at most half its row's step (``max|row| / 254``). Only for
Gather on axis 0 of a float32 constant 2-D table of at least ``min_elements`` elements, or on
axis 1 of a tied LM head's table (:mod:`.tied_head`: ``[H, V]``, a scale per column). A
table another layer reads in float (a tied head kept float by a budget) is left float: the
file holds it anyway, and an int8 copy would only add bytes and error. A table a quantized
layer reads as its int8 weight with the same scales (the tied head,
quantized per output column) is not quantized again: the lookup gathers from that copy, and
where migration scaled the head's input rows (``smooth``) it divides them back (one Mul on
the looked-up rows: SmolLM2's head loses +1.8% perplexity unsmoothed, +0.45% at 0.75).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import replace_node
from onnxpress.passes.quantize.static.rewrite import QuantizedWeight

__all__ = ["quantize_embeddings"]


def quantize_embeddings(graph: ir.Graph,
                        shared: Mapping[ir.Value, QuantizedWeight] | None = None,
                        min_elements: int = 4096) -> int:
    """Rewrite every eligible Gather of the main graph; the number of tables quantized here.
    ``shared``: float weights a layer now reads as int8 (their lookups reuse that copy)."""
    tables: dict[tuple[ir.Value, int], tuple[ir.Value, ir.Value, np.ndarray | None]] = {}
    count = 0
    for node in list(graph):
        axis = node.attributes.get_int("axis", 0)
        if node.op_type != "Gather" or node.domain != "" or axis not in (0, 1):
            continue
        table = node.inputs[0]
        if table is not None and table not in (shared or {}) and any(
                user.op_type != "Gather" for user, _ in table.uses()):
            continue  # a float layer reads it too (a tied head kept float): a copy adds bytes
        array = constant_array(table)
        if (array is None or array.dtype != np.float32 or array.ndim != 2
                or array.size < min_elements):
            continue
        builder = Builder(graph)
        if (table, axis) not in tables:
            reused = _int8_copy((shared or {}).get(table), axis)
            if reused is None:
                p = quant_math.weight_params(array, axis=axis, dtype="int8", symmetric=True)
                reused = (
                    builder.initializer(quant_math.quantize(array, p),
                                        f"{table.name}_quantized"),
                    builder.initializer(np.asarray(p.scale, np.float32),
                                        f"{table.name}_row_scale"), None)
                count += 1
            tables[table, axis] = reused
        rows_q, scales, factors = tables[table, axis]
        ids = node.inputs[1]
        rows = builder.op("Cast", [builder.op("Gather", [rows_q, ids], {"axis": axis})],
                          {"to": ir.DataType.FLOAT})
        row_scales = builder.op("Gather", [scales, ids], {"axis": 0})
        if axis == 0:  # [*ids, H] rows: a scale per row, over its last axis
            last = builder.initializer(np.array([-1], np.int64), f"{table.name}_row_axis")
            row_scales = builder.op("Unsqueeze", [row_scales, last])
        # (axis 1: [H, *ids] columns; the [*ids] scales broadcast from the right)
        out = builder.op("Mul", [rows, row_scales], name=f"{node.name}_dequantized")
        if factors is not None:  # a smoothed head's copy: its H rows carry the factors
            assert ids is not None and ids.shape is not None
            shape = [-1] if axis == 0 else [-1] + [1] * len(ids.shape)
            undo = builder.initializer((1 / factors).astype(np.float32).reshape(shape),
                                       f"{table.name}_unsmoothed")
            out = builder.op("Mul", [out, undo], name=f"{node.name}_unsmoothed")
        builder.insert_before(node)
        replace_node(graph, node, out)
    return count


def _int8_copy(weight: QuantizedWeight | None, axis: int
               ) -> tuple[ir.Value, ir.Value, np.ndarray | None] | None:
    """The int8 initializer, scales and migration factors (None: unsmoothed) of a quantized
    weight whose slices along ``axis`` are the lookup's, else None."""
    if weight is None or weight.axis != axis:
        return None
    dequantize = weight.value.producer()
    if dequantize is None or not all(v is not None and v.is_initializer()
                                     for v in dequantize.inputs[:2]):
        return None
    rows_q, scales = dequantize.inputs[0], dequantize.inputs[1]
    assert rows_q is not None and scales is not None
    factors = None if weight.migration is None else weight.migration.factors
    return rows_q, scales, factors
