"""The graph edits ``quantize`` makes (the sensitivity simulator, :mod:`.sensitivity`, uses
the same int8 weights):

- weight ``W`` -> ``int8 W_q -> DequantizeLinear`` (per output channel, symmetric);
- bias ``b`` -> ``int32 b_q -> DequantizeLinear`` at scale ``s_input * s_weight``;
- activation ``x`` -> ``x -> QuantizeLinear -> DequantizeLinear`` (per tensor), or with a
  migration (:mod:`.migration`) ``x -> Mul(1 / s) -> Q -> DQ``, and weights ``s * W``.

Each function adds nodes and initializers and returns the new float value; which consumers
read it is the caller's choice.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.passes.quantize.static.migration import Migration

__all__ = ["QuantizedWeight", "dequantized_bias", "dequantized_weight", "int8_weight", "qdq",
           "weight_round_trip"]


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A weight after :func:`dequantized_weight`: the value the layer now reads, the int8
    copy's scale, and (for bias correction, without quantizing again) what the layer
    computes with in place of the float weight."""

    value: ir.Value
    scale: np.ndarray
    quantized: np.ndarray
    params: quant_math.QuantParams
    axis: int
    migration: Migration | None

    def round_trip(self) -> np.ndarray:
        return _restored(self.quantized, self.params, self.axis, self.migration)


def dequantized_weight(
    graph: ir.Graph, node: ir.Node, weight: ir.Value, axis: int,
    migration: Migration | None = None,
) -> QuantizedWeight:
    """int8 per-channel weight + its DequantizeLinear, inserted before ``node``. With a
    ``migration``, the weight that reads the smoothed input."""
    array = constant_array(weight)
    assert array is not None
    if migration is not None:
        array = migration.weight(array, axis)
    quantized, p = int8_weight(array, axis)
    builder = Builder(graph)
    q = builder.initializer(quantized, f"{weight.name}_quantized")
    scale = builder.initializer(np.asarray(p.scale, np.float32), f"{weight.name}_scale")
    zero = builder.initializer(np.asarray(p.zero_point), f"{weight.name}_zero_point")
    out = builder.op("DequantizeLinear", [q, scale, zero], {"axis": axis},
                     name=f"{weight.name}_DequantizeLinear")
    out.name = f"{weight.name}_dequantized"
    builder.insert_before(node)
    return QuantizedWeight(out, np.asarray(p.scale, np.float32), quantized, p, axis, migration)


def int8_weight(array: np.ndarray, axis: int) -> tuple[np.ndarray, quant_math.QuantParams]:
    """A weight as int8, symmetric, one scale per slice along ``axis``; its parameters."""
    p = quant_math.weight_params(array, axis=axis, dtype="int8", symmetric=True)
    return quant_math.quantize(array, p), p


def weight_round_trip(array: np.ndarray, axis: int, migration: Migration | None = None,
                      ) -> tuple[np.ndarray, quant_math.QuantParams]:
    """What the quantized layer computes with in place of ``array`` (see ``_restored``),
    and the int8 copy's parameters."""
    q, p = int8_weight(array if migration is None else migration.weight(array, axis), axis)
    return _restored(q, p, axis, migration), p


def _restored(q: np.ndarray, p: quant_math.QuantParams, axis: int,
              migration: Migration | None) -> np.ndarray:
    """The int8 copy dequantized; with a ``migration``, divided back by the factors (the
    layer's input is multiplied back by them)."""
    if migration is None:
        return quant_math.dequantize(q, p)
    unsmoothed = Migration((1 / migration.factors).astype(np.float32))
    return unsmoothed.weight(quant_math.dequantize(q, p), axis)


def dequantized_bias(
    graph: ir.Graph, node: ir.Node, bias: ir.Value | None, input_scale: float,
    weight_scale: np.ndarray,
) -> ir.Value:
    """int32 bias at scale ``input_scale * weight_scale`` + its DequantizeLinear, inserted
    before ``node``."""
    array = constant_array(bias)
    assert bias is not None and array is not None
    q, scale = quant_math.int32_bias(array, input_scale, weight_scale)
    builder = Builder(graph)
    # a bias two layers share (Caffe2's SqueezeNet) gets one int32 copy per layer, at each
    # layer's scale, each under its own names
    own = node.name or node.outputs[0].name
    base = bias.name if len(bias.uses()) <= 1 else f"{bias.name}_{own}"
    q_value = builder.initializer(q, f"{base}_quantized")
    scale_value = builder.initializer(np.asarray(scale, np.float32), f"{base}_scale")
    zero = builder.initializer(np.zeros(np.shape(scale), np.int32), f"{base}_zero_point")
    out = builder.op("DequantizeLinear", [q_value, scale_value, zero], {"axis": 0},
                     name=f"{base}_DequantizeLinear")
    out.name = f"{base}_dequantized"
    builder.insert_before(node)
    return out


def qdq(builder: Builder, value: ir.Value, p: quant_math.QuantParams,
        migration: Migration | None = None) -> ir.Value:
    """``value -> Q -> DQ`` recorded on ``builder`` (not yet placed); the DQ output. With a
    ``migration``, ``value -> Mul(1 / factors) -> Q -> DQ``."""
    scale = builder.initializer(np.asarray(p.scale, np.float32).reshape(()), f"{value.name}_scale")
    zero = builder.initializer(np.asarray(p.zero_point).reshape(()), f"{value.name}_zero_point")
    source = value
    if migration is not None:
        inverse = builder.initializer((1 / migration.factors).astype(np.float32),
                                      f"{value.name}_smoothing")
        source = builder.op("Mul", [value, inverse], name=f"{value.name}_Smooth")
        source.name, source.dtype, source.shape = f"{value.name}_smoothed", value.dtype, value.shape
    quantized = builder.op("QuantizeLinear", [source, scale, zero],
                           name=f"{value.name}_QuantizeLinear")
    quantized.name = f"{value.name}_quantized"
    restored = builder.op("DequantizeLinear", [quantized, scale, zero],
                          name=f"{value.name}_DequantizeLinear")
    restored.name = f"{value.name}_dequantized"
    restored.dtype, restored.shape = value.dtype, value.shape
    return restored
