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

import numpy as np
import onnx_ir as ir

from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.passes.quantize.migration import Migration

__all__ = ["dequantized_bias", "dequantized_weight",
           "int8_weight",
           "qdq", "replace_node", "weight_round_trip"]


def dequantized_weight(
    graph: ir.Graph, node: ir.Node, weight: ir.Value, axis: int,
    migration: Migration | None = None,
) -> tuple[ir.Value, np.ndarray]:
    """int8 per-channel weight + its DequantizeLinear, inserted before ``node``; the scale.
    With a ``migration``, the weight that reads the smoothed input."""
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
    return out, np.asarray(p.scale, np.float32)


def int8_weight(array: np.ndarray, axis: int) -> tuple[np.ndarray, quant_math.QuantParams]:
    """A weight as int8, symmetric, one scale per slice along ``axis``; its parameters."""
    p = quant_math.weight_params(array, axis=axis, dtype="int8", symmetric=True)
    return quant_math.quantize(array, p), p


def weight_round_trip(array: np.ndarray, axis: int, migration: Migration | None = None,
                      ) -> tuple[np.ndarray, quant_math.QuantParams]:
    """What the quantized layer computes with in place of ``array``: its int8 copy
    dequantized; with a ``migration``, the smoothed weight's copy divided back by the
    factors (the layer's input is multiplied back by them). And the int8 copy's
    parameters."""
    if migration is None:
        q, p = int8_weight(array, axis)
        return quant_math.dequantize(q, p), p
    q, p = int8_weight(migration.weight(array, axis), axis)
    unsmoothed = Migration((1 / migration.factors).astype(np.float32))
    return unsmoothed.weight(quant_math.dequantize(q, p), axis), p


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
    q_value = builder.initializer(q, f"{bias.name}_quantized")
    scale_value = builder.initializer(np.asarray(scale, np.float32), f"{bias.name}_scale")
    zero = builder.initializer(np.zeros(np.shape(scale), np.int32), f"{bias.name}_zero_point")
    out = builder.op("DequantizeLinear", [q_value, scale_value, zero], {"axis": 0},
                     name=f"{bias.name}_DequantizeLinear")
    out.name = f"{bias.name}_dequantized"
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




def replace_node(graph: ir.Graph, node: ir.Node, out: ir.Value) -> None:
    """``out`` (already placed) takes over ``node``'s only output: its readers, its name,
    shape and type, a graph output's place; then ``node`` goes."""
    old = node.outputs[0]
    ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
    name, old.name = old.name, f"{old.name}_float"
    out.name, out.shape, out.type = name, old.shape, old.type
    graph.remove(node, safe=True)

