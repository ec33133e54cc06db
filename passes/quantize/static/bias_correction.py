"""Bias correction: rounding a layer's weight to int8 shifts the mean of its output by
``E[(W_q - W) x] = (W_q - W) E[x]``, a systematic error the next layers amplify. The layer's
float bias absorbs it: ``b -= (W_q - W) mean(x)``, with ``mean(x)`` per input channel from
the calibration run (the analytical correction of Nagel et al., "Data-Free Quantization",
2019, with measured means in place of BatchNorm statistics). A Conv's spatial borders see
the zero padding, not the mean; the correction treats every position alike.

Where the bias lives: a Conv's or Gemm's third input; the constant vector a MatMul's sole
reader adds (exporters write Linear as MatMul + Add); QAttention's packed Q/K/V bias. A
layer with no bias is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.layers import layer_bias
from onnxpress.passes.quantize.static.policy import Target


class ChannelMean:
    """Streams batches of an activation; ``mean`` per index of ``axis`` (every other axis
    averaged), in float64. Non-finite values are left out of neither sum nor count: a layer
    input is finite wherever its float output is."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self._sum: np.ndarray | None = None
        self._count = 0

    def __call__(self, x: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(x), self.axis, -1)
        flat = x.reshape(-1, x.shape[-1])
        total = flat.sum(axis=0, dtype=np.float64)
        self._sum = total if self._sum is None else self._sum + total
        self._count += flat.shape[0]

    @property
    def mean(self) -> np.ndarray | None:
        return None if self._sum is None or not self._count else self._sum / self._count


def input_axis(target: Target) -> int | None:
    """The channel axis of the layer's activation input that the weight's input axis
    contracts, when the layer has a bias to correct."""
    if bias_site(target) is None:
        return None
    return 1 if target.node.op_type in ("Conv", "Gemm") else -1


def bias_site(target: Target) -> tuple[ir.Node, int] | None:
    """(node, input index) of the layer's float bias vector."""
    node = target.node
    if target.weight is None:
        return None
    if node.op_type == "Gemm" and (node.attributes.get_float("alpha", 1.0) != 1.0
                                   or node.attributes.get_float("beta", 1.0) != 1.0):
        return None
    if node.op_type in ("Conv", "Gemm"):
        return (node, target.bias) if target.bias is not None else None
    site = layer_bias(node) if node.op_type in ("Attention", "MatMul") else None
    return site if site is not None and _float32(site[0].inputs[site[1]]) else None


def output_shift(weight_error: np.ndarray, target: Target, mean: np.ndarray) -> np.ndarray:
    """``(W_q - W) mean(x)``: one value per output channel of the layer."""
    op, axis = target.node.op_type, target.axis
    if op == "Conv":
        out_channels, per_group = weight_error.shape[:2]
        groups = mean.shape[0] // per_group
        summed = weight_error.reshape(out_channels, per_group, -1).sum(axis=2)
        means = mean.reshape(groups, per_group)[np.arange(out_channels) // (out_channels // groups)]
        return (summed * means).sum(axis=1)
    return weight_error @ mean if axis == 0 else mean @ weight_error


def corrected(graph: ir.Graph, site: tuple[ir.Node, int], shift: np.ndarray) -> bool:
    """Subtract ``shift`` from the bias at ``site`` (a new initializer: the old one may be
    read elsewhere). False when the bias is not a vector of the shift's length."""
    node, index = site
    bias = node.inputs[index]
    array = constant_array(bias)
    if bias is None or array is None or array.shape != shift.shape:
        return False
    # a uniquely named one: a bias two layers share (CSE of equal constants) is corrected
    # once for each
    value = Builder(graph).initializer((array - shift).astype(np.float32), f"{bias.name}_corrected")
    node.replace_input_with(index, value)
    return True


def _float32(value: ir.Value | None) -> bool:
    array = constant_array(value)
    return array is not None and array.dtype == np.float32
