"""Tracing one of q, k^T, v of an attention block back to its input projection.

A head tensor is the projection ``P = x @ W (+ b)`` ([B, S, Dp]) reshaped to
``[B, S, t0, t1, ...]`` and then moved around by Transposes, picked from by
Gather/Slice/Split + Squeeze (how exporters unbind a packed qkv), and scaled by scalars.
Replaying those ops on axis labels tells which trailing axis is the head, which the head
size, and which index every other axis was picked at; from that, the columns of W that
feed each (head, channel) follow, whatever layout the exporter chose ([3, H, d], [H, 3, d],
separate projections...).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.attention import reshape as _reshape
from onnxpress.ir.attention.values import const, dims, scalar

QV_LAYOUT = ("batch", "head", "sequence", "channel")
K_T_LAYOUT = ("batch", "head", "channel", "sequence")


@dataclasses.dataclass
class Projection:
    x: ir.Value
    output: ir.Value
    weight: np.ndarray  # [Din, Dp]
    bias: np.ndarray | None  # [Dp]
    nodes: list[ir.Node]


@dataclasses.dataclass
class HeadPath:
    projection: Projection
    columns: np.ndarray  # [heads * head_size] columns of the projection, head-major
    heads: int
    head_size: int
    factor: float  # product of the scalar multiplies on the path
    nodes: list[ir.Node]  # Reshape .. last op, the projection's nodes not included


def trace_head(value: ir.Value, layout: tuple[str, ...]) -> HeadPath | str:
    steps: list[tuple] = []
    nodes: list[ir.Node] = []
    factor = 1.0
    while True:
        node = value.producer()
        if node is None or node.domain != "":
            return "a head tensor does not come from a Reshape of a projection"
        nodes.append(node)
        if node.op_type == "Reshape":
            break
        step = _step(node, value)
        if isinstance(step, str):
            return step
        if step[0] == "scale":
            factor *= step[1]
        elif step[0] != "identity":
            steps.append(step)
        value = step[-1]
    projection = trace_projection(node.inputs[0])
    if isinstance(projection, str):
        return projection
    lead = (projection.output, projection.x, projection.nodes[0].outputs[0])
    entries = _reshape.layout(node, dims(projection.x), lead)
    if isinstance(entries, str):
        return entries
    if tuple(entries[:2]) != _reshape.LEAD or not all(isinstance(e, int) for e in entries[2:]):
        return "the head Reshape does not keep [B, S] in front"
    sizes = [int(e) for e in entries[2:]]
    if int(np.prod(sizes)) != projection.weight.shape[1]:
        return "the head Reshape does not split the projection's width"
    replayed = _replay(list(reversed(steps)), sizes)
    if isinstance(replayed, str):
        return replayed
    labels, fixed = replayed
    wanted = [name if name in _reshape.LEAD else int for name in layout]
    if len(labels) != 4 or len(fixed) != len(sizes) - 2 or any(
        label != want if isinstance(want, str) else not isinstance(label, int)
        for label, want in zip(labels, wanted)
    ):
        return f"the head tensor is not laid out as [{', '.join(layout)}]"
    head_axis, channel_axis = labels[layout.index("head")], labels[layout.index("channel")]
    grid = np.meshgrid(np.arange(sizes[head_axis]), np.arange(sizes[channel_axis]), indexing="ij")
    index = [np.full(grid[0].shape, fixed.get(t, 0)) for t in range(len(sizes))]
    index[head_axis], index[channel_axis] = grid
    columns = np.ravel_multi_index(index, sizes).reshape(-1)
    return HeadPath(projection, columns, sizes[head_axis], sizes[channel_axis], factor, nodes)


def _step(node: ir.Node, value: ir.Value) -> tuple | str:
    """One op on the way back, as (kind, ..., the value before it)."""
    op, inputs = node.op_type, node.inputs
    if op == "Identity":
        return ("identity", inputs[0])
    if op == "Transpose":
        return ("perm", list(node.attributes.get_ints("perm", [])), inputs[0])
    if op in ("Mul", "Div"):
        for i, c in ((1, inputs[1]), (0, inputs[0])):
            number = scalar(c, len(dims(inputs[1 - i]) or ())) if c is not None else None
            if number is not None and (op == "Mul" or i == 1) and number != 0:
                return ("scale", number if op == "Mul" else 1.0 / number, inputs[1 - i])
        return f"a head tensor is scaled by a non-constant in {op}"
    if op == "Gather":
        index = const(inputs[1])
        if index is not None and index.ndim == 0:
            return ("select", node.attributes.get_int("axis", 0), int(index), inputs[0])
    if op == "Squeeze":
        axes = const(inputs[1]) if len(inputs) > 1 else None
        axes = axes.tolist() if axes is not None else node.attributes.get_ints("axes")
        if axes is not None and len(list(np.atleast_1d(axes))) == 1:
            return ("squeeze", int(np.atleast_1d(axes)[0]), inputs[0])
    if op == "Slice":
        return _slice_step(node)
    if op == "Split":
        return _split_step(node, value)
    return f"a head tensor passes through {op}"


def _slice_step(node: ir.Node) -> tuple | str:
    values = [const(v) for v in node.inputs[1:]]
    if len(values) < 3 or any(v is None or v.size != 1 for v in values):
        return "a Slice of a head tensor is not a constant one-element pick"
    start, end, axis = (int(v.reshape(())) for v in values[:3])
    step = int(values[3].reshape(())) if len(values) > 3 else 1
    if end != start + 1 or step != 1 or start < 0:
        return "a Slice of a head tensor is not a one-element pick"
    return ("pick", axis, start, node.inputs[0])


def _split_step(node: ir.Node, value: ir.Value) -> tuple | str:
    sizes = const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    sizes = sizes.tolist() if sizes is not None else node.attributes.get_ints("split")
    if sizes is not None and any(s != 1 for s in sizes):
        return "a Split of a head tensor is not into single slices"
    index = list(node.outputs).index(value)
    return ("split", node.attributes.get_int("axis", 0), index, len(node.outputs), node.inputs[0])


def _replay(steps: list[tuple], sizes: list[int]) -> tuple[list, dict[int, int]] | str:
    """Apply the ops forward to labels ["batch", "sequence", 0, 1, ...]; return the final
    labels and the index picked on each removed trailing axis."""
    labels: list = ["batch", "sequence", *range(len(sizes))]
    picked: dict[int, int] = {}
    fixed: dict[int, int] = {}
    for step in steps:
        kind = step[0]
        if kind == "perm":
            if sorted(step[1]) != list(range(len(labels))):
                return "a Transpose of a head tensor has a bad perm"
            labels = [labels[p] for p in step[1]]
            continue
        axis = step[1] + len(labels) if step[1] < 0 else step[1]
        if not 0 <= axis < len(labels):
            return "a head tensor op names an axis out of range"
        label = labels[axis]
        if kind == "squeeze":
            if label not in picked:
                return "a Squeeze removes an axis that was not picked"
            fixed[label] = picked.pop(label)
            labels.pop(axis)
        elif not isinstance(label, int):
            return "a head tensor is sliced along the batch or sequence axis"
        elif kind == "select" and -sizes[label] <= step[2] < sizes[label]:
            fixed[label] = step[2] % sizes[label]
            labels.pop(axis)
        elif kind == "pick" and step[2] < sizes[label]:
            picked[label] = step[2]
        elif kind == "split" and step[3] == sizes[label]:
            picked[label] = step[2]
        else:
            return f"a {kind} of a head tensor does not pick one index of a qkv axis"
    if picked:
        return "a picked axis of a head tensor is never squeezed"
    return labels, fixed


def trace_projection(value: ir.Value) -> Projection | str:
    """``value`` as ``MatMul(x, W) (+ b)`` with constant W (maybe Transpose(constant)) and b."""
    node = value.producer()
    nodes: list[ir.Node] = []
    bias = None
    if node is not None and node.op_type == "Add" and node.domain == "":
        nodes.append(node)
        arrays = [const(v) for v in node.inputs]
        if (arrays[0] is None) == (arrays[1] is None):
            return "the projection's Add is not a bias Add"
        side = 1 if arrays[1] is not None else 0
        bias = arrays[side]
        node = node.inputs[1 - side].producer()
    if node is None or node.op_type != "MatMul" or node.domain != "":
        return "a head tensor does not come from a MatMul projection"
    nodes.insert(0, node)
    weight = _constant_matrix(node.inputs[1])
    x = node.inputs[0]
    shape = dims(x)
    if weight is None or weight.dtype != np.float32 or shape is None or len(shape) != 3:
        return "the projection is not [B, S, D] x constant float32 [D, D']"
    if bias is not None and (bias.shape != (weight.shape[1],) or bias.dtype != np.float32):
        return "the projection's bias is not a float32 vector of its width"
    return Projection(x, value, weight, bias, nodes)


def _constant_matrix(value: ir.Value | None) -> np.ndarray | None:
    array = const(value)
    node = value.producer() if value is not None else None
    if array is None and node is not None and node.op_type == "Transpose":
        inner = const(node.inputs[0])
        perm = node.attributes.get_ints("perm", [1, 0])
        array = inner.T if inner is not None and inner.ndim == 2 and list(perm) == [1, 0] else None
    return array if array is not None and array.ndim == 2 else None
