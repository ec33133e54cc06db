"""The channel shuffle (ShuffleNet): ``Reshape [N, C, H, W] -> [N, g, C/g, H, W]``,
``Transpose`` swapping the ``g`` and ``C/g`` axes, ``Reshape`` back to ``[N, C, H, W]``.
It is a fixed permutation: position ``i*g + j`` after it holds position ``j*C/g + i``
before it. Any channel axis works (given counted from the end); the two inner tensors must
have no other reader.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array

__all__ = ["channel_shuffle"]


def _only_reader(value: ir.Value) -> ir.Node | None:
    uses = value.uses()
    return uses[0].node if len(uses) == 1 and not value.is_graph_output() else None


def channel_shuffle(node: ir.Node, axis: int, size: int,
                    target: np.ndarray) -> tuple[int, ir.Node] | str:
    """The shuffle starting at Reshape ``node`` (its channels on ``axis`` from the end):
    its piece count ``g`` and the Reshape that ends it, or why it is not one."""
    not_one = f"Reshape {node.name!r} reshapes them"
    before, mid = node.inputs[0].shape, node.outputs[0].shape
    if before is None or mid is None:
        return f"{not_one} (shapes unknown)"
    before, mid = list(before.dims), list(mid.dims)
    at = len(before) + axis
    if (len(mid) != len(before) + 1 or len(target) != len(mid) or mid[:at] != before[:at]
            or mid[at + 2:] != before[at + 1:] or not isinstance(mid[at], int)
            or not isinstance(mid[at + 1], int) or mid[at] * mid[at + 1] != size):
        return not_one
    pieces, width = mid[at], mid[at + 1]
    swap = list(range(len(mid)))
    swap[at], swap[at + 1] = at + 1, at
    transpose = _only_reader(node.outputs[0])
    if (transpose is None or transpose.op_type != "Transpose"
            or list(transpose.attributes.get_ints("perm", [])) != swap):
        return f"{not_one} (not a channel shuffle)"
    back = _only_reader(transpose.outputs[0])
    back_target = None if back is None or back.op_type != "Reshape" else constant_array(
        back.inputs[1])
    if (back is None or back_target is None or back.outputs[0].shape is None
            or list(back.outputs[0].shape.dims) != before or len(back_target) != len(before)):
        return f"{not_one} (not a channel shuffle)"
    # the cut rewrites the literal entries: g must stay literal, C/g and C shrink
    if target[at] != pieces or target[at + 1] not in (width, -1) \
            or back_target[at] not in (size, -1):
        return f"channel shuffle at {node.name!r}: target shapes it cannot rewrite"
    return pieces, back
