"""``quantize``: static post-training quantization in QDQ form.

Calibrates the activations the policy picks (:mod:`.policy`) on the pass's data, then:
- each picked activation gets one ``QuantizeLinear -> DequantizeLinear`` pair (per tensor,
  uint8 asymmetric by default for x86 CPU: ONNX Runtime's signed-activation kernels run
  2-4x slower there; ``activations=int8`` gives symmetric int8, what TensorRT wants);
- each weight is stored as int8 (symmetric, per output channel) + ``DequantizeLinear`` — no
  float copy and no weight QuantizeLinear, so the file is 4x smaller without ``fold-qdq``;
- a Conv/Gemm bias whose input is quantized becomes int32 at scale ``s_input * s_weight``
  (what integer kernels add), + ``DequantizeLinear``.

Lossy by design: the report's ``check`` (or ``onnxpress compare``) measures what it costs.
Without data the pass stops with a one-line error: ranges must come from real inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir import quant_math
from onnxpress.ir.analysis import constant_array, opset_version
from onnxpress.ir.builder import Builder
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.quantize.policy import Plan, Target, plan

__all__ = ["Quantize"]

#: a calibrated |range| above this is a mask or sentinel value, not an activation
MAX_ACTIVATION_RANGE = 1e5


@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    name = "quantize"

    calibration: str = "minmax"  # observer: minmax, percentile, entropy, mse
    activations: Literal["uint8", "int8"] = "uint8"
    ops: str = "Conv,MatMul,Gemm"
    outputs: str = "Conv"  # ops whose output is quantized too (after a fused Relu/Clip)
    activation_matmul: bool = True  # MatMul of two activations (attention)
    max_batches: int = 64
    exclude: str = ""  # comma-separated node names kept in float
    data: Any = data_field()

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False,
                           stats={"nodes": 0, "activations": 0, "weights": 0, "biases": 0})
        if self.data is None:
            raise BadInputError("quantize needs calibration data: give --calibration FILE.npz "
                                "(arrays named after the model's inputs)")
        if (opset_version(model) or 0) < 13:
            raise BadInputError("quantize needs opset >= 13 (per-channel DequantizeLinear); "
                                "convert first with --opset 13")
        graph = model.graph
        chosen = plan(graph, ops=_names(self.ops), quantize_outputs=_names(self.outputs),
                      activation_matmul=self.activation_matmul, exclude=_names(self.exclude))
        result.notes.extend(chosen.notes)
        params = self._calibrate(model, chosen, result.notes)
        weights: dict[ir.Value, tuple[ir.Value, np.ndarray]] = {}
        for target in chosen.targets:
            if self._quantize_target(graph, target, params, weights, result.stats):
                result.stats["nodes"] += 1
        for value, p in params.items():
            _insert_qdq(graph, value, p)
            result.stats["activations"] += 1
        _drop_unused_initializers(graph)
        result.modified = bool(result.stats["nodes"] or result.stats["activations"])
        return result

    def _calibrate(
        self, model: ir.Model, chosen: Plan, notes: list[str]
    ) -> dict[ir.Value, quant_math.QuantParams]:
        from onnxpress.passes.quantize.calibration import collect

        if not chosen.activations:
            return {}
        observers = collect(model, [v.name for v in chosen.activations], self.data,
                            method=self.calibration, max_batches=self.max_batches)
        params = {}
        for value in chosen.activations:
            lo, hi = (float(np.min(x)) for x in observers[value.name].range())
            if max(-lo, hi) > MAX_ACTIVATION_RANGE:
                notes.append(f"activation {value.name!r} spans [{lo:.3g}, {hi:.3g}], a mask or "
                             "sentinel range; left in float")
                continue
            params[value] = quant_math.params_from_range(
                lo, hi, dtype=self.activations, symmetric=self.activations == "int8")
        return params

    def _quantize_target(
        self,
        graph: ir.Graph,
        target: Target,
        params: dict[ir.Value, quant_math.QuantParams],
        weights: dict[ir.Value, tuple[ir.Value, np.ndarray]],
        stats: dict[str, int],
    ) -> bool:
        node = target.node
        activation_inputs = [v for i, v in enumerate(node.inputs[:2])
                             if i != target.weight and v is not None]
        if any(v not in params for v in activation_inputs if constant_array(v) is None):
            return False  # an input stayed float (e.g. its range looked like a mask)
        if target.weight is None:
            return bool(activation_inputs)
        weight = node.inputs[target.weight]
        assert weight is not None and target.axis is not None
        if weight not in weights:
            weights[weight] = _dequantized_weight(graph, node, weight, target.axis)
            stats["weights"] += 1
        dq_weight, weight_scale = weights[weight]
        node.replace_input_with(target.weight, dq_weight)
        if target.bias is not None and activation_inputs and activation_inputs[0] in params:
            input_scale = params[activation_inputs[0]].scale
            bias = node.inputs[target.bias]
            node.replace_input_with(target.bias, _dequantized_bias(
                graph, node, bias, float(input_scale), weight_scale))
            stats["biases"] += 1
        return True


def _drop_unused_initializers(graph: ir.Graph) -> None:
    """The float weights and biases their int8/int32 copies replaced."""
    for name, value in list(graph.initializers.items()):
        if not list(value.uses()) and not value.is_graph_input() and not value.is_graph_output():
            graph.initializers.pop(name)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _dequantized_weight(
    graph: ir.Graph, node: ir.Node, weight: ir.Value, axis: int
) -> tuple[ir.Value, np.ndarray]:
    """int8 per-channel weight + its DequantizeLinear, inserted before ``node``; the scale."""
    array = constant_array(weight)
    assert array is not None
    p = quant_math.weight_params(array, axis=axis, dtype="int8", symmetric=True)
    builder = Builder(graph)
    q = builder.initializer(quant_math.quantize(array, p), f"{weight.name}_quantized")
    scale = builder.initializer(np.asarray(p.scale, np.float32), f"{weight.name}_scale")
    zero = builder.initializer(np.asarray(p.zero_point), f"{weight.name}_zero_point")
    out = builder.op("DequantizeLinear", [q, scale, zero], {"axis": axis},
                     name=f"{weight.name}_DequantizeLinear")
    out.name = f"{weight.name}_dequantized"
    builder.insert_before(node)
    return out, np.asarray(p.scale, np.float32)


def _dequantized_bias(
    graph: ir.Graph, node: ir.Node, bias: ir.Value | None, input_scale: float,
    weight_scale: np.ndarray,
) -> ir.Value:
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


def _insert_qdq(graph: ir.Graph, value: ir.Value, p: quant_math.QuantParams) -> None:
    """``value -> Q -> DQ`` right after its producer; every consumer reads the DQ output
    (graph outputs keep the float value)."""
    uses = [(use.node, use.idx) for use in value.uses()]  # before the Q becomes one
    builder = Builder(graph)
    scale = builder.initializer(np.asarray(p.scale, np.float32).reshape(()), f"{value.name}_scale")
    zero = builder.initializer(np.asarray(p.zero_point).reshape(()), f"{value.name}_zero_point")
    quantized = builder.op("QuantizeLinear", [value, scale, zero],
                           name=f"{value.name}_QuantizeLinear")
    quantized.name = f"{value.name}_quantized"
    restored = builder.op("DequantizeLinear", [quantized, scale, zero],
                          name=f"{value.name}_DequantizeLinear")
    restored.name = f"{value.name}_dequantized"
    restored.dtype, restored.shape = value.dtype, value.shape
    builder.insert_after(value.producer())
    for consumer, index in uses:
        consumer.replace_input_with(index, restored)
