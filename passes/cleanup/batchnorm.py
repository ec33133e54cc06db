"""``fold-batchnorm``: fold an inference BatchNormalization into the op that feeds it.

- ``BN(Conv(x, W, B))``          -> ``Conv(x, W*s, (B-mean)*s + beta)``, s = gamma/sqrt(var+eps)
- ``BN(ConvTranspose(x, W, B))`` -> the same, scaling W's output channels per group
- ``BN(Gemm(a, W, C))``          -> ``Gemm(a, W*s, (beta_g*C - mean)*s + beta)``, output rank 2
- ``BN(MatMul(a, W))``           -> ``Add(MatMul(a, W*s), beta - mean*s)``, output rank 2

Exact up to float rounding (one multiply folded into the weights; outputs agree to ~1e-6
relative). When W is a stored constant it is rescaled in place of the old weight; when W
is computed from constants only (e.g. ``ConstantOfShape``), a ``Mul(W, s)`` is inserted
instead, so the file does not grow and the runtime folds it at load. A BN is left alone,
with the reason in the report, when: its statistics are not constant, it runs in training
mode or its extra outputs are used, the producer's output has other users, the weight or
bias depends on a graph input, or the channel axis does not line up.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import all_graphs, constant_array, opset_version
from onnxpress.ir.builder import Builder
from onnxpress.ir.layers import linear_layer
from onnxpress.passes.base import Pass, PassStats

__all__ = ["FoldBatchNorm"]

logger = logging.getLogger(__name__)

_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_MAX_DEPENDENCY_WALK = 64


@dataclasses.dataclass(frozen=True)
class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    visits_subgraphs = True

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False, stats={"folded": 0, "skipped": 0})
        opset = opset_version(model) or 1
        for graph in list(all_graphs(model)):
            for bn in [n for n in graph if n.op_type == "BatchNormalization" and n.domain == ""]:
                reason = _fold(graph, bn, opset)
                if reason is None:
                    result.stats["folded"] += 1
                    result.modified = True
                elif reason != _NOT_AFTER_PRODUCER:
                    result.stats["skipped"] += 1
                    result.notes.append(f"BatchNormalization {bn.name!r} kept: {reason}")
        return result


_NOT_AFTER_PRODUCER = "not fed by Conv/ConvTranspose/Gemm/MatMul"


def _fold(graph: ir.Graph, bn: ir.Node, opset: int) -> str | None:
    """Fold ``bn`` into its producer; return None when done, else why not (graph unchanged)."""
    producer = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    if producer is None or producer.op_type not in _PRODUCERS or producer.domain != "":
        return _NOT_AFTER_PRODUCER
    reason = _inference_only(bn, opset)
    if reason:
        return reason
    produced = producer.outputs[0]
    if len(produced.uses()) != 1 or produced.is_graph_output():
        return f"the output of {producer.op_type} {producer.name!r} has other users"
    params = [constant_array(v) for v in bn.inputs[1:5]]
    if len(params) < 4 or any(p is None for p in params):
        return "its scale, bias, mean or variance is not constant"
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    eps = bn.attributes.get_float("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    plan = _plan(producer, scale, mean, beta)
    if isinstance(plan, str):
        return plan
    _apply(graph, bn, producer, plan)
    return None


def _inference_only(bn: ir.Node, opset: int) -> str | None:
    if bn.attributes.get_int("training_mode", 0) != 0:
        return "it runs in training mode"
    if any(out.uses() or out.is_graph_output() for out in bn.outputs[1:]):
        return "its running-statistics outputs are used"
    if opset < 7 and bn.attributes.get_int("is_test", 0) != 1:
        return "before opset 7 it is inference only with is_test=1"
    if opset < 9 and bn.attributes.get_int("spatial", 1) != 1:
        return "spatial=0 (per-element statistics) is not supported"
    return None


@dataclasses.dataclass
class _Plan:
    axis: int  # the weight axis that indexes output channels
    groups: int  # ConvTranspose groups (1 elsewhere)
    bias: np.ndarray  # the new bias, already computed
    add_bias_node: bool  # MatMul has no bias slot: an Add follows it
    scale: np.ndarray
    weight_rank: int


def _plan(producer: ir.Node, scale: np.ndarray, mean: np.ndarray, beta: np.ndarray):
    op = producer.op_type
    inputs = producer.inputs
    weight = inputs[1] if len(inputs) > 1 else None
    if weight is None or not _constant_derived(weight):
        return f"the weight of {op} {producer.name!r} depends on a graph input"
    rank = _weight_rank(producer, weight)
    if rank is None:
        return f"the rank of {op} {producer.name!r}'s weight is unknown"
    if op == "MatMul":
        out_shape, w_shape = producer.outputs[0].shape, weight.shape
        if out_shape is None or len(out_shape) != 2 or w_shape is None or len(w_shape) != 2:
            return "MatMul output is not known to be 2-D, so its channels are not BN's axis 1"
        return _Plan(1, 1, beta - mean * scale, True, scale, rank)
    bias_value = inputs[2] if len(inputs) > 2 else None
    old_bias = np.zeros(1) if bias_value is None else constant_array(bias_value)
    if old_bias is None:
        return f"the bias of {op} {producer.name!r} is not constant"
    old_bias = old_bias.astype(np.float64)
    layer = linear_layer(producer)
    assert layer is not None
    if op == "Gemm":
        old_bias = old_bias * producer.attributes.get_float("beta", 1.0)
        return _Plan(layer.out_axis, 1, (old_bias - mean) * scale + beta, False, scale, rank)
    groups = layer.groups if op == "ConvTranspose" else 1
    if groups > 1 and constant_array(weight) is None:
        return "grouped ConvTranspose with a computed weight is not supported"
    return _Plan(layer.out_axis, groups, (old_bias - mean) * scale + beta, False, scale, rank)


def _weight_rank(producer: ir.Node, weight: ir.Value) -> int | None:
    if weight.shape is not None:
        return len(weight.shape)
    if producer.op_type in ("Gemm", "MatMul"):
        return 2
    kernel = producer.attributes.get_ints("kernel_shape")
    if kernel:
        return len(kernel) + 2
    x = producer.inputs[0]
    return len(x.shape) if x is not None and x.shape is not None else None


def _constant_derived(value: ir.Value) -> bool:
    """True when the value is computed from constants only (walks a bounded distance)."""
    stack, seen = [value], 0
    while stack:
        current = stack.pop()
        seen += 1
        if seen > _MAX_DEPENDENCY_WALK or current.is_graph_input():
            return False
        if current.const_value is not None:
            continue
        producer = current.producer()
        if producer is None:
            return False
        stack.extend(v for v in producer.inputs if v is not None)
    return True


def _apply(graph: ir.Graph, bn: ir.Node, producer: ir.Node, plan: _Plan) -> None:
    weight = producer.inputs[1]
    known = weight.dtype or bn.inputs[1].dtype or ir.DataType.FLOAT
    dtype = known.numpy()
    builder = Builder(graph)
    prefix = bn.name or producer.name or "bn"
    stored = constant_array(weight) if len(weight.uses()) == 1 else None
    if stored is not None:
        new_weight = builder.initializer(_scaled(stored, plan), f"{weight.name}_bnfold")
    else:
        shape = [1] * plan.weight_rank
        shape[plan.axis] = -1
        scale = builder.initializer(plan.scale.reshape(shape).astype(dtype), f"{prefix}_scale")
        new_weight = builder.op("Mul", [weight, scale])
        if weight.dtype is not None:
            new_weight.dtype, new_weight.shape = weight.dtype, weight.shape
    bias = builder.initializer(plan.bias.astype(dtype), f"{prefix}_bias")
    inputs = [producer.inputs[0], new_weight]
    if not plan.add_bias_node:
        inputs.append(bias)
    attributes = {k: v for k, v in producer.attributes.items() if k != "beta"}
    out = builder.op(producer.op_type, inputs, attributes, name=producer.name)
    if plan.add_bias_node:
        out = builder.op("Add", [out, bias])
    ir.convenience.replace_nodes_and_values(
        graph, bn, [bn, producer], list(builder.nodes), [bn.outputs[0]], [out]
    )


def _scaled(weight: np.ndarray, plan: _Plan) -> np.ndarray:
    scale = plan.scale
    if plan.groups > 1:  # ConvTranspose W: [C_in, C_out/groups, k...]
        c_in, per_group = weight.shape[0], weight.shape[1]
        kernel = weight.shape[2:]
        grouped = weight.reshape(plan.groups, c_in // plan.groups, per_group, *kernel)
        factor = scale.reshape(plan.groups, 1, per_group, *[1] * len(kernel))
        return (grouped * factor).reshape(weight.shape).astype(weight.dtype)
    shape = [1] * weight.ndim
    shape[plan.axis] = -1
    return (weight * scale.reshape(shape)).astype(weight.dtype)
