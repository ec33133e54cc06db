"""The Hugging Face additive attention mask, traced back to the integer mask it is made of.

Read structurally first (below); other spellings (transformers 5's ``Where`` over
``Range``/``Gather`` of the flattened mask) are recognised by evaluating the subgraph on
probe masks (:mod:`.mask_probe`).

``Mul(Sub(1, Cast<float>(Unsqueeze(Unsqueeze(m)))), c)`` with ``m`` an integer or bool
``[B, S]`` tensor is ``c`` where ``m == 0`` and ``0`` where ``m == 1``: what ORT's Attention
computes from a raw 2-D ``mask_index`` with ``mask_filter_value = c``. Slices that provably
keep everything and Identities may sit anywhere in the chain.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.attention.mask_probe import probe_mask
from onnxpress.ir.attention.values import const, dims, same_dim, same_dims, scalar

_INTEGER = {
    ir.DataType.INT64, ir.DataType.INT32, ir.DataType.INT16, ir.DataType.INT8,
    ir.DataType.UINT8, ir.DataType.BOOL,
}
_FULL_RANGE = 2**31 - 1


@dataclasses.dataclass
class MaskSource:
    source: ir.Value  # the integer [B, S] mask
    fill: float  # what a masked position adds to the scores


def trace_mask(value: ir.Value, x_dims: tuple | None) -> MaskSource | str:
    """The mask ``value`` adds to the scores as its integer source and fill, or why not."""
    found = _structural(value, x_dims)
    if not isinstance(found, str):
        return found
    probed = probe_mask(value, x_dims)
    if isinstance(probed, str):
        return f"{found}; probed: {probed}"
    return MaskSource(*probed)


def _structural(value: ir.Value, x_dims: tuple | None) -> MaskSource | str:
    node = value.producer()
    if node is None or node.op_type != "Mul" or node.domain != "":
        return "the attention mask is not (1 - m) * c"
    fill, inner = scalar(node.inputs[1], 4), node.inputs[0]
    if fill is None:
        fill, inner = scalar(node.inputs[0], 4), node.inputs[1]
    sub = inner.producer() if inner is not None else None
    if fill is None or not np.isfinite(fill) or sub is None or sub.op_type != "Sub":
        return "the attention mask is not (1 - m) * c with a constant c"
    if scalar(sub.inputs[0], 4) != 1.0:
        return "the attention mask does not subtract from 1"
    chain = _chain(sub.inputs[1])
    if isinstance(chain, str):
        return chain
    source, steps = chain
    shape = dims(source)
    if shape is None or len(shape) != 2 or source.dtype not in _INTEGER:
        return "the attention mask does not come from an integer [B, S] tensor"
    labels: list = ["batch", "sequence"]
    for axes in steps:
        rank = len(labels) + len(axes)
        for axis in sorted(a + rank if a < 0 else a for a in axes):
            labels.insert(axis, 1)
    if labels != ["batch", 1, 1, "sequence"]:
        return "the attention mask is not m[:, None, None, :]"
    if x_dims is None or not (same_dim(shape[0], x_dims[0]) and same_dim(shape[1], x_dims[1])):
        return "the mask's [B, S] is not provably the attention input's"
    return MaskSource(source, fill)


def _chain(value: ir.Value | None) -> tuple[ir.Value, list[list[int]]] | str:
    """Back from the Cast's output to the integer mask: Unsqueeze axes in forward order."""
    steps: list[list[int]] = []
    casts = 0
    while value is not None and value.producer() is not None:
        node = value.producer()
        if node.op_type == "Cast" and node.attributes.get_int("to") == ir.DataType.FLOAT:
            casts += 1
        elif node.op_type == "Unsqueeze":
            axes = const(node.inputs[1]) if len(node.inputs) > 1 else None
            axes = axes.tolist() if axes is not None else node.attributes.get_ints("axes")
            if axes is None:
                return "an Unsqueeze in the attention mask has unknown axes"
            steps.insert(0, [int(a) for a in np.atleast_1d(axes)])
        elif node.op_type == "Slice":
            if not _keeps_all(node):
                return "a Slice in the attention mask may cut it"
        elif node.op_type != "Identity":
            break
        value = node.inputs[0]
    if casts != 1 or value is None:
        return "the attention mask is not one Cast to float of an integer tensor"
    return value, steps


def _keeps_all(node: ir.Node) -> bool:
    """A Slice with unit steps whose output provably has its input's shape, or whose
    constant bounds are [0, end of axis)."""
    steps = const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
    if steps is not None and np.any(steps != 1):
        return False
    if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
        return False
    if same_dims(dims(node.inputs[0]), dims(node.outputs[0])):
        return True
    starts, ends = const(node.inputs[1]), const(node.inputs[2])
    return starts is not None and ends is not None and bool(
        np.all(starts == 0) and np.all(ends >= _FULL_RANGE)
    )
