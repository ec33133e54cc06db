"""A weight layer (Conv, Gemm, MatMul with a constant weight) seen as a matrix
``[outputs, features]`` acting on feature rows: a Conv's unfolded patches (input channel x
kernel position, the order of ``weight.reshape(O, -1)``), a Gemm's or MatMul's last axis.
Compensation (prune's refit) and factoring (lowrank) work in this view and write back."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array


def layer_bias(node: ir.Node) -> tuple[ir.Node, int] | None:
    """A Conv's or Gemm's bias input; the constant vector a MatMul's sole reader adds."""
    if node.op_type in ("Conv", "Gemm"):
        if len(node.inputs) > 2 and constant_array(node.inputs[2]) is not None:
            return node, 2
        return None
    uses = list(node.outputs[0].uses())
    if len(uses) == 1 and uses[0].node.op_type == "Add":
        add, other = uses[0].node, 1 - uses[0].idx
        array = constant_array(add.inputs[other])
        if array is not None and array.ndim == 1 and len(list(add.inputs[other].uses())) == 1:
            return add, other
    return None


def features_of(node: ir.Node, x: np.ndarray) -> np.ndarray:
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1])
    weight = constant_array(node.inputs[1])
    assert weight is not None
    kernel = weight.shape[2:]
    attrs = node.attributes
    strides = attrs.get_ints("strides", [1] * len(kernel))
    dilations = attrs.get_ints("dilations", [1] * len(kernel))
    pads = attrs.get_ints("pads", [0] * 2 * len(kernel))
    spatial = len(kernel)
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    padded = np.pad(x, widths)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=tuple(
        range(2, 2 + spatial)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations)
    windows = windows[index]  # [N, C, out..., k...]
    order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    return windows.transpose(order).reshape(-1, int(np.prod(weight.shape[1:])))


def outputs_of(node: ir.Node, weight: np.ndarray) -> int:
    if node.op_type == "Conv":
        return weight.shape[0]
    if node.op_type == "Gemm":
        return weight.shape[0 if node.attributes.get_int("transB", 0) else 1]
    return weight.shape[1]


def in_channels(node: ir.Node, weight: np.ndarray) -> int:
    return weight.size // outputs_of(node, weight) // (
        int(np.prod(weight.shape[2:])) if node.op_type == "Conv" else 1)


def as_matrix(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight
    return weight.T


def from_matrix(node: ir.Node, weight: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return matrix.reshape(weight.shape)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return matrix
    return matrix.T
