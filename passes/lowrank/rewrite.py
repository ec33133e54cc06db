"""Graph surgery for ``lowrank``: a layer becomes two thinner ones, or gains a parallel
low-rank branch. ``B [outputs, r]`` and ``A [r, features]`` are the factors in the
``[outputs, features]`` view of :mod:`onnxpress.ir.layers`.

- ``MatMul(X, W)`` -> ``MatMul(MatMul(X, A^T), B^T)``;
- ``Gemm(X, W, C)`` -> ``Gemm(Gemm(X, A^T; transA), B^T, C; alpha, beta)``;
- ``Conv(X, W, b)`` (k x k) -> ``Conv(Conv(X, A as r k x k filters; strides, pads,
  dilations), B as 1 x 1 filters, b)``.

The original node stays as the second factor, so its output value, name and readers are
untouched; the first factor is inserted before it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.builder import Builder
from onnxpress.ir.layers import drop_transposes

#: a weight's stored dimensions and element type: all the surgery needs of it
Stored = tuple[tuple[int, ...], np.dtype]

_SPATIAL = ("strides", "pads", "dilations", "auto_pad", "kernel_shape")


def factor(graph: ir.Graph, node: ir.Node, weight: Stored, left: np.ndarray,
           right: np.ndarray) -> None:
    """Replace ``node``'s weight (``weight``: its stored shape and type) by the two factors
    ``left @ right``."""
    builder = Builder(graph)
    stem = node.name or node.outputs[0].name or "layer"
    rank = left.shape[1]
    first_weight, second_weight = _weights(node, weight, left, right)
    a = builder.initializer(first_weight, f"{stem}_lowrank_a")
    b = builder.initializer(second_weight, f"{stem}_lowrank_b")
    x = node.inputs[0]
    if node.op_type == "Conv":
        spatial = {k: node.attributes[k].value for k in _SPATIAL if k in node.attributes}
        hidden = builder.op("Conv", [x, a], spatial, name=f"{stem}_lowrank")
        for key in _SPATIAL:
            node.attributes.pop(key, None)
        node.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape",
                                                        [1] * (len(weight[0]) - 2))
    elif node.op_type == "Gemm":
        trans_a = node.attributes.get_int("transA", 0)
        hidden = builder.op("Gemm", [x, a], {"transA": trans_a}, name=f"{stem}_lowrank")
        drop_transposes(node)
    else:
        hidden = builder.op("MatMul", [x, a], name=f"{stem}_lowrank")
    hidden.name = f"{stem}_lowrank_out"
    # the weight's type is the layer's (ONNX's T): x may carry none in an untyped export
    hidden.dtype = ir.DataType.from_numpy(first_weight.dtype)
    hidden.shape = _hidden_shape(node, x, rank)
    builder.insert_before(node)
    node.replace_input_with(0, hidden)
    node.replace_input_with(1, b)


def branch(graph: ir.Graph, node: ir.Node, weight: Stored, left: np.ndarray,
           right: np.ndarray) -> ir.Value:
    """Add ``x -> (x A^T) B^T`` (the layer's own kind of op, no bias) beside ``node``: its
    output now feeds an Add of the two. Returns the Add's output."""
    builder = Builder(graph)
    stem = node.name or node.outputs[0].name or "layer"
    first_weight, second_weight = _weights(node, weight, left, right)
    a = builder.initializer(first_weight, f"{stem}_branch_a")
    b = builder.initializer(second_weight, f"{stem}_branch_b")
    x, y = node.inputs[0], node.outputs[0]
    if node.op_type == "Conv":
        spatial = {k: node.attributes[k].value for k in _SPATIAL if k in node.attributes}
        hidden = builder.op("Conv", [x, a], spatial, name=f"{stem}_branch")
        delta = builder.op("Conv", [hidden, b], {"kernel_shape": [1] * (len(weight[0]) - 2)},
                           name=f"{stem}_branch_up")
    else:
        hidden = builder.op("MatMul", [x, a], name=f"{stem}_branch")
        delta = builder.op("MatMul", [hidden, b], name=f"{stem}_branch_up")
    hidden.name, delta.name = f"{stem}_branch_out", f"{stem}_branch_delta"
    hidden.dtype = delta.dtype = ir.DataType.from_numpy(first_weight.dtype)
    readers = list(y.uses())
    total = builder.op("Add", [y, delta], name=f"{stem}_branch_add")
    total.name, total.dtype, total.shape = f"{stem}_with_branch", delta.dtype, y.shape
    builder.insert_after(node)
    for use in readers:
        use.node.replace_input_with(use.idx, total)
    graph.outputs[:] = [total if out is y else out for out in graph.outputs]
    if total in graph.outputs:  # keep the graph's output name
        y.name, total.name = f"{y.name}_base", y.name
    return total


def _weights(node: ir.Node, weight: Stored, left: np.ndarray,
             right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two factors as the layer's kind of op reads its weight."""
    dims, dtype = weight
    if node.op_type == "Conv":
        rank = left.shape[1]
        first = right.reshape(rank, *dims[1:])
        second = left.reshape(dims[0], rank, *([1] * (len(dims) - 2)))
        return first.astype(dtype), second.astype(dtype)
    return right.T.astype(dtype), left.T.astype(dtype)


def _hidden_shape(node: ir.Node, x: ir.Value, rank: int) -> ir.Shape | None:
    if node.op_type == "Conv" or x.shape is None:
        return None  # spatial sizes: left to shape inference
    dims = list(x.shape.dims)
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return ir.Shape([dims[1], rank])
    return ir.Shape([*dims[:-1], rank])
