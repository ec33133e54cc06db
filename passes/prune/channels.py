"""Removing channels group by group (:mod:`onnxpress.ir.channel_groups`): every constant a
group touches is cut along its channel axis (through a shuffle's order; a grouped Conv's
filters each lose their own group's columns), a Reshape's literal channel count shrinks,
and every value carrying the channels gets its new shape. A constant shared by several
nodes (CSE merges equal weights) gets a cut copy per reader, so the others keep theirs.

Which channels go: :func:`select` honours a group's constraints (grouped Conv parts that
lose as many channels each, a shuffle's tied positions) exactly, or removes fewer.
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


def select(group: Group, scores: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` channels of ``group`` to remove, sorted, lowest scores first, such
    that tied channels go together and every part of every balance (a grouped Conv's
    groups, before or after a shuffle) loses as many. Channels are taken in *units* (tied
    columns); a unit lying in one part of a balance must be matched by one in each other
    part, a unit spread evenly over the parts is free, any other unit stays."""
    if not group.ties and not group.balance:
        return lowest(scores, count, group.segments)
    size = len(scores)
    balances = list(group.balance)
    if group.segments > 1:
        balances.append(np.arange(size) // (size // group.segments))
    classes: dict[tuple, list[np.ndarray]] = collections.defaultdict(list)
    for unit in _units(size, group.ties):
        key = _unit_class(unit, balances)
        if key is not None:
            classes[key].append(unit)
    free = classes.pop(tuple([None] * len(balances)) + (None,), [])
    if classes and not _evens_out(list(classes), balances):
        classes = {}  # one unit from each class would not balance: only free units go
    best: tuple[int, float, list[np.ndarray]] = (0, 0.0, [])
    for each in range(min((len(u) for u in classes.values()), default=0) + 1):
        taken = [unit for units in classes.values()
                 for unit in sorted(units, key=lambda u: scores[u].sum())[:each]]
        budget = count - sum(len(u) for u in taken)
        if budget < 0:
            break
        for unit in sorted(free, key=lambda u: scores[u].sum() / len(u)):
            if len(unit) <= budget:
                taken.append(unit)
                budget -= len(unit)
        removed, cost = count - budget, float(sum(scores[u].sum() for u in taken))
        if (removed, -cost) > (best[0], -best[1]):
            best = (removed, cost, taken)
    chosen = np.sort(np.concatenate(best[2])) if best[2] else np.zeros(0, np.int64)
    for labels in balances:
        lost = np.bincount(labels[chosen], minlength=labels.max() + 1)
        assert (lost == lost[0]).all(), "a balance constraint was not met"
    return chosen.astype(np.int64)


def _units(size: int, ties: list[np.ndarray]) -> list[np.ndarray]:
    """The channels that go together: connected through the columns of ``ties``."""
    parent = np.arange(size)

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for tie in ties:
        for column in np.asarray(tie).T:
            for other in column[1:]:
                parent[find(int(other))] = find(int(column[0]))
    roots = np.array([find(c) for c in range(size)])
    return [np.flatnonzero(roots == r) for r in dict.fromkeys(roots.tolist())]


def _unit_class(unit: np.ndarray, balances: list[np.ndarray]) -> tuple | None:
    """Per balance, the one part the unit lies in (None: spread evenly over all parts),
    and its size; None when it lies unevenly across parts (it cannot go)."""
    key: list[int | None] = []
    for labels in balances:
        counts = np.bincount(labels[unit], minlength=labels.max() + 1)
        if (counts == counts[0]).all():
            key.append(None)
        elif np.count_nonzero(counts) == 1:
            key.append(int(labels[unit[0]]))
        else:
            return None
    return (*key, None if all(k is None for k in key) else len(unit))


def _evens_out(keys: list[tuple], balances: list[np.ndarray]) -> bool:
    """Whether taking one unit of every class loses as many channels from each part of
    every balance."""
    for number, labels in enumerate(balances):
        lost = np.zeros(labels.max() + 1)
        for key in keys:
            size = key[-1]
            if key[number] is None:
                lost += size / len(lost)
            else:
                lost[key[number]] += size
        if not np.allclose(lost, lost[0]):
            return False
    return True


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
            array[item.axis] -= len(removed) // item.parts
    else:
        by_axis: dict[int, list[tuple[Slice, np.ndarray]]] = collections.defaultdict(list)
        for item, removed in items:
            by_axis[item.axis].append((item, removed))
        for axis, on_axis in by_axis.items():
            parts = on_axis[0][0].parts
            if parts > 1:
                array = _cut_grouped(array, axis, parts, on_axis)
            else:
                array = np.compress(keep_mask(array.shape[axis], on_axis), array, axis=axis)
    return new_constant(graph, value, array, "pruned")


def _cut_grouped(array: np.ndarray, axis: int, parts: int,
                 items: list[tuple[Slice, np.ndarray]]) -> np.ndarray:
    """A grouped Conv's weight ``[O, C/g, k...]``: group ``q``'s filters (rows ``q*O/g``
    on) read input positions ``q*C/g`` on, so each loses the columns of its own group's
    removed channels; the groups lose as many (the selection sees to it)."""
    width = array.shape[axis]
    keep = keep_mask(width * parts, items).reshape(parts, width)
    assert (keep.sum(axis=1) == keep.sum(axis=1)[0]).all(), "groups lose unequal counts"
    rows = np.split(array, parts, axis=0)
    return np.concatenate([np.compress(k, r, axis=axis) for k, r in zip(keep, rows)], axis=0)


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
               for space, length in flow.segments) // flow.parts
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
