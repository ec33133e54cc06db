"""What a Reshape in an attention block does to the token axes, proved from whatever the
model offers: the output's annotated shape, a constant target, or a target assembled from
``Shape`` pieces (``Concat(Unsqueeze(Gather(Shape(t), j)), ...)``, TorchScript's spelling).

``layout`` returns one entry per output axis: ``LEAD[0]``/``LEAD[1]`` where the axis is
provably the batch / sequence axis of the reference, an int where its size is static, or
the reason it cannot tell.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import onnx_ir as ir

from onnxpress.ir.attention.values import const, dims, same_dim

LEAD = ("batch", "sequence")
Entry = int | str | None


def layout(node: ir.Node, ref: tuple, lead: Collection[ir.Value],
           trailing: tuple[int, ...] | None = None) -> list[int | str] | str:
    """Axes of ``Reshape`` ``node``'s output. ``ref`` holds the dims [B, S, ...] of the
    attention input; ``lead`` the values whose axes 0 and 1 are known to be [B, S] (the
    Reshape's own input among them); ``trailing`` the input's axes after [B, S] when the
    caller has proved them (the heads of ``probs @ v`` that a ``-1`` split leaves
    unannotated)."""
    if node.op_type != "Reshape" or node.domain != "":
        return f"{node.op_type} is not a Reshape"
    out = dims(node.outputs[0])
    target = _target_entries(node, ref, lead)
    rank = len(out) if out is not None else len(target) if target is not None else None
    if rank is None:
        return "the Reshape's target is unknown"
    entries: list[Entry] = []
    for axis in range(rank):
        from_out = _from_dim(out[axis], axis, ref) if out is not None else None
        from_target = target[axis] if target is not None and axis < len(target) else None
        entries.append(from_out if from_out not in (None, -1) else from_target)
    input_dims = dims(node.inputs[0])
    if trailing is not None:
        input_dims = (*(input_dims or (None, None))[:2], *trailing)
    return _resolve_inferred(entries, input_dims)


def _from_dim(dim, axis: int, ref: tuple) -> Entry:
    if axis < 2 and len(ref) > axis and same_dim(dim, ref[axis]):
        return LEAD[axis]
    return dim if isinstance(dim, int) else None


def _target_entries(node: ir.Node, ref: tuple, lead: Collection[ir.Value]) -> list[Entry] | None:
    target = node.inputs[1] if len(node.inputs) > 1 else None
    values = const(target)
    if values is not None:
        allow_zero = node.attributes.get_int("allowzero", 0) == 1
        return [
            LEAD[axis] if value == 0 and axis < 2 and not allow_zero
            else int(value) if value != 0 else None
            for axis, value in enumerate(values.tolist())
        ]
    producer = target.producer() if target is not None else None
    if producer is None or producer.op_type != "Concat":
        return None
    entries: list[Entry] = []
    for piece in producer.inputs:
        part = _piece(piece)
        if part is None:
            return None
        for item in part:
            entries.append(_shape_item(item, len(entries), ref, lead))
    return entries


def _piece(value: ir.Value | None) -> list | None:
    """A Concat piece of a shape: ints, or (tensor, axis) for a dimension read off a tensor."""
    array = const(value)
    if array is not None:
        return [int(v) for v in np.atleast_1d(array).tolist()]
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in ("Unsqueeze", "Cast", "Reshape", "Squeeze"):
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    if node is None:
        return None
    if node.op_type == "Shape":
        return _shape_slice(node, 0, None)
    shape_of = node.inputs[0].producer() if node.inputs and node.inputs[0] else None
    bounds = [const(v) for v in node.inputs[1:]]
    if shape_of is None or any(b is None or b.size != 1 for b in bounds):
        return None
    ints = [int(b.reshape(())) for b in bounds]
    if node.op_type == "Gather" and node.attributes.get_int("axis", 0) == 0 and len(ints) == 1:
        items = _shape_slice(shape_of, ints[0], ints[0] + 1 if ints[0] != -1 else None)
        return items if items is not None and len(items) == 1 else None
    if node.op_type == "Slice" and len(ints) in (2, 3, 4) and ints[2:] in ([], [0], [0, 1]):
        return _shape_slice(shape_of, ints[0], ints[1])
    return None


def _shape_slice(node: ir.Node, start: int, end: int | None) -> list | None:
    """The (tensor, axis) items that ``Shape(t)[start:end]`` yields (Shape's own start/end
    attributes included), when t's rank is known."""
    if node.op_type != "Shape":
        return None
    tensor = node.inputs[0]
    shape = dims(tensor)
    if shape is None:
        return None
    axes = list(range(len(shape)))
    attrs = node.attributes
    axes = axes[attrs.get_int("start", 0): attrs.get_int("end", len(shape))]
    return [(tensor, axis) for axis in axes[start:end]]


def _shape_item(item, position: int, ref: tuple, lead: Collection[ir.Value]) -> Entry:
    if isinstance(item, int):
        return item if item != 0 else None
    tensor, axis = item
    if position < 2 and axis == position and tensor in lead:
        return LEAD[position]
    dim = dims(tensor)[axis]
    if position < 2 and len(ref) > position and same_dim(dim, ref[position]):
        return LEAD[position]
    return dim if isinstance(dim, int) else None


def _resolve_inferred(entries: list[Entry], input_dims: tuple | None) -> list[int | str] | str:
    """At most one -1 (or unknown) entry, resolved when every other entry is proven and the
    element count pins it: a lead axis when the input is [B, S, static...]."""
    unknown = [i for i, e in enumerate(entries) if e is None or e == -1]
    if not unknown:
        return entries  # type: ignore[return-value]
    if len(unknown) > 1 or input_dims is None or len(input_dims) < 2:
        return "the Reshape's target leaves more than one axis unproved"
    static_in = [d for d in input_dims[2:] if isinstance(d, int)]
    if len(static_in) != len(input_dims) - 2:
        return "the Reshape's input has dynamic trailing axes"
    static_out = [e for e in entries if isinstance(e, int) and e != -1]
    leads = [e for e in entries if isinstance(e, str)]
    missing = set(LEAD) - set(leads)
    if len(missing) == 1 and math.prod(static_out) == math.prod(static_in):
        entries[unknown[0]] = missing.pop()
        return entries  # type: ignore[return-value]
    if not missing and math.prod(static_in) % max(math.prod(static_out), 1) == 0:
        entries[unknown[0]] = math.prod(static_in) // max(math.prod(static_out), 1)
        return entries  # type: ignore[return-value]
    return "the Reshape's inferred axis cannot be pinned"
