"""Embedding tables as int8 rows: ``Gather(table, ids)`` ->
``Mul(Cast(Gather(table_q, ids)), Unsqueeze(Gather(scales, ids)))``.

A transformer's word embeddings are half of a small model's file (MiniLM: 47 of 87 MB) and
no kernel quantizes them: ``quantize`` leaves Gather alone. Each row is stored as symmetric
int8 with its own scale (rows are looked up whole, so a per-row scale costs one float per
token), and only the looked-up rows are dequantized at run time. ``DequantizeLinear -> Gather``
would be the textbook form, but ONNX Runtime does not fold a DequantizeLinear of an
initializer: it would dequantize all 30522 rows on every run.

Lossy: each element is off by at most half its row's step (``max|row| / 254``). Only for
Gather on axis 0 of a float32 constant 2-D table of at least ``min_elements`` elements.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import replace_node

__all__ = ["quantize_embeddings"]


def quantize_embeddings(graph: ir.Graph, min_elements: int = 4096) -> int:
    """Rewrite every eligible Gather of the main graph; the number of tables."""
    tables: dict[ir.Value, tuple[ir.Value, ir.Value]] = {}
    count = 0
    for node in list(graph):
        if node.op_type != "Gather" or node.domain != "" or node.attributes.get_int("axis", 0):
            continue
        table = node.inputs[0]
        array = constant_array(table)
        if (array is None or array.dtype != np.float32 or array.ndim != 2
                or array.size < min_elements):
            continue
        builder = Builder(graph)
        if table not in tables:
            p = quant_math.weight_params(array, axis=0, dtype="int8", symmetric=True)
            tables[table] = (
                builder.initializer(quant_math.quantize(array, p), f"{table.name}_quantized"),
                builder.initializer(np.asarray(p.scale, np.float32), f"{table.name}_row_scale"),
            )
            count += 1
        rows_q, scales = tables[table]
        ids = node.inputs[1]
        rows = builder.op("Cast", [builder.op("Gather", [rows_q, ids], {"axis": 0})],
                          {"to": ir.DataType.FLOAT})
        axes = builder.initializer(np.array([-1], np.int64), f"{table.name}_row_axis")
        row_scales = builder.op("Unsqueeze", [builder.op("Gather", [scales, ids], {"axis": 0}),
                                              axes])
        out = builder.op("Mul", [rows, row_scales], name=f"{node.name}_dequantized")
        builder.insert_before(node)
        replace_node(graph, node, out)
    return count
