"""Removing channels group by group (:mod:`onnxpress.ir.channel_groups`): every constant a
group touches is cut along its channel axis, a Reshape's literal channel count shrinks, and
every value carrying the channels gets its new shape. A constant shared by several nodes
(CSE merges equal weights) gets a cut copy per reader, so the others keep theirs.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.channel_groups import Flow, Group, Slice, keep_mask
from onnxpress.ir.edit import remove_unread


def magnitude(group: Group) -> np.ndarray:
    """Per channel, the L2 norm of everything that writes it: the producers' output rows
    and biases. A channel whose filters and biases are all zero scores exactly 0."""
    squares = np.zeros(group.size)
    for item in group.producers:
        array = np.asarray(constant_array(item.node.inputs[item.index]), np.float64)
        rows = np.moveaxis(array, item.axis, 0).reshape(array.shape[item.axis], -1)
        squares += (rows[item.offset:item.offset + group.size] ** 2).sum(axis=1)
    return np.sqrt(squares)


def lowest(scores: np.ndarray, count: int, segments: int = 1) -> np.ndarray:
    """The ``count`` lowest-scoring channels, sorted (ties: the lower index goes first);
    with ``segments``, as many from each equal part (a grouped Conv's output groups), the
    count rounded down to a multiple of them."""
    if segments > 1:
        width, each = len(scores) // segments, count // segments
        return np.concatenate([start + lowest(scores[start:start + width], each)
                               for start in range(0, len(scores), width)]).astype(np.int64)
    order = np.lexsort((np.arange(len(scores)), scores))
    return np.sort(order[:count])


def remove_channels(graph: ir.Graph, plan: Sequence[tuple[Group, np.ndarray]]) -> int:
    """Cut ``removed`` channel indices from each group; the number of constants rewritten."""
    removed_by_space = {space: removed for group, removed in plan if len(removed)
                        for space in group.spaces}
    cuts: dict[tuple[ir.Node, int], list[tuple[Slice, np.ndarray]]] = collections.defaultdict(
        list)
    for group, removed in plan:
        if len(removed):
            for item in group.slices:
                cuts[item.node, item.index].append((item, removed))
    for (node, index), items in cuts.items():
        if index < 0:  # a depthwise Conv's group count
            count = node.attributes.get_int("group", 1) - sum(len(r) for _, r in items)
            node.attributes["group"] = ir.AttrInt64("group", count)
            continue
        node.replace_input_with(index, _cut(graph, node.inputs[index], items))
    flows: dict[ir.Value, Flow] = {}
    for group, removed in plan:
        if len(removed):
            flows.update(group.values)
    for value, flow in flows.items():
        _reshape(value, flow, removed_by_space)
    remove_unread(list(graph.initializers.values()), producers=())
    return len(cuts)




def _cut(graph: ir.Graph, value: ir.Value | None,
         items: list[tuple[Slice, np.ndarray]]) -> ir.Value:
    array = constant_array(value)
    assert value is not None and array is not None
    if items[0][0].role == "shape":
        array = array.copy()
        for item, removed in items:
            array[item.axis] -= len(removed)
    else:
        by_axis: dict[int, list[tuple[Slice, np.ndarray]]] = collections.defaultdict(list)
        for item, removed in items:
            by_axis[item.axis].append((item, removed))
        for axis, on_axis in by_axis.items():
            array = np.compress(keep_mask(array.shape[axis], on_axis), array, axis=axis)
    return new_constant(graph, value, array, "pruned")


def replace_constant(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray,
                     suffix: str) -> None:
    """Input ``index`` of ``node`` reads a new initializer holding ``array``."""
    old = node.inputs[index]
    assert old is not None
    node.replace_input_with(index, new_constant(graph, old, array, suffix))


def new_constant(graph: ir.Graph, old: ir.Value, array: np.ndarray, suffix: str) -> ir.Value:
    """A new initializer holding ``array`` in ``old``'s dtype, named after it."""
    name = _unique(graph, f"{old.name}_{suffix}")
    dtype = old.dtype.numpy() if old.dtype is not None else array.dtype
    out = ir.Value(name=name, shape=ir.Shape(array.shape), type=old.type,
                   const_value=ir.tensor(np.ascontiguousarray(array, dtype=dtype), name=name))
    graph.register_initializer(out)
    return out


def _reshape(value: ir.Value, flow: Flow, removed: dict[int, np.ndarray]) -> None:
    size = sum(length - len(removed.get(space, ())) if space is not None else length
               for space, length in flow.segments)
    shape = value.shape
    if shape is None or len(shape) < -flow.axis:
        return
    dims = list(shape.dims)
    dims[flow.axis] = size
    value.shape = ir.Shape(dims)


def _unique(graph: ir.Graph, name: str) -> str:
    candidate, number = name, 1
    while candidate in graph.initializers:
        number += 1
        candidate = f"{name}_{number}"
    return candidate
