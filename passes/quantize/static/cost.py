"""Whether int8 pays for a group of convolutions on ONNX Runtime CPU: a deterministic
estimate from shapes alone (same model, same decision), used by the ``int8`` preset.

An int8 convolution is faster than its fp32 one, but entering and leaving the integer
domain is not free: each activation quantized where a float op produced it costs a
QuantizeLinear, and each one a float op reads costs a DequantizeLinear. A chain of
convolutions pays those once; a lone convolution between float ops pays them for itself.
Measured on a 2-core Xeon (AVX-512 VNNI, AMX), ONNX Runtime 1.32, batch 1, between 1 and 4
chained Convs + Relu (``benchmarks/suites/int8_cost.py``): a lone Conv ran 0.59x-1.03x fp32
in int8, each further Conv of a chain 1.5x-8.7x, a depthwise one 0.63x (so those stay out
altogether, ``grouped=false``).

So the targets are split into *regions*, the layers joined by the activations they share
(a Conv's output read by the next Conv, both inputs of a residual Add), and a region of
Convs and Adds stays float when its estimated saving (MACs at the two rates) is smaller
than the estimated cost of the Q/DQ at its edges. A region holding any other layer (MatMul,
Gemm, Attention) is kept: ``min_rows`` decides those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import onnx_ir as ir

from onnxpress.ir.analysis import constant_array

#: multiply-accumulates per second, fp32 and int8 (the chained-Conv measurements' middle)
FP32_RATE, INT8_RATE = 80e9, 250e9
#: seconds per QuantizeLinear/DequantizeLinear at a region's edge, and per element it converts
EDGE_FIXED, EDGE_PER_ELEMENT = 50e-6, 1.5e-9
#: what a symbolic axis other than the first (the sample axis, 1) is taken to hold
NOMINAL_DIM = 64
_CONV_REGION = frozenset({"Conv", "Add"})


def unprofitable(targets: list, fused: dict[ir.Node, ir.Node]) -> list[list[int]]:
    """The regions (lists of indices into ``targets``, ``policy.Target``) int8 does not pay
    for. ``fused``: a target node -> the Relu/Clip whose output it has quantized instead of
    its own (that node belongs to the region too)."""
    regions = _regions(targets)
    dropped: list[list[int]] = []
    for region in regions:
        chosen = [targets[i] for i in region]
        if any(t.node.op_type not in _CONV_REGION for t in chosen):
            continue
        nodes = {t.node for t in chosen} | {fused[t.node] for t in chosen if t.node in fused}
        saving = sum(_saving(t.node) for t in chosen)
        edges = _edge_cost(dict.fromkeys(v for t in chosen for v in t.activations), nodes)
        if saving < edges:
            dropped.append(region)
    return dropped


def _regions(targets: list) -> list[list[int]]:
    parent = list(range(len(targets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[ir.Value, int] = {}
    for index, target in enumerate(targets):
        for value in target.activations:
            if value in seen:
                parent[find(index)] = find(seen[value])
            else:
                seen[value] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(targets)):
        groups.setdefault(find(index), []).append(index)
    return list(groups.values())


def _saving(node: ir.Node) -> float:
    """Seconds int8 saves on a Conv (0 for an Add: QLinearAdd is no faster than Add);
    infinite when its size is unknown, so that the region is kept."""
    if node.op_type != "Conv":
        return 0.0
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    out = _elements(node.outputs[0])
    if weight is None or out is None:
        return math.inf
    macs = out * math.prod(weight.shape[1:])  # per output element: C_in/groups x kernel
    return macs * (1 / FP32_RATE - 1 / INT8_RATE)


def _edge_cost(values: Iterable[ir.Value], nodes: set[ir.Node]) -> float:
    """The Q where a value enters from outside the region and the DQ where an op outside it
    reads one (or where it leaves the graph)."""
    cost = 0.0
    for value in values:
        elements = _elements(value)
        if elements is None:
            return 0.0  # unknown sizes: keep the region
        edges = int(value.producer() not in nodes)
        edges += any(use.node not in nodes for use in value.uses())
        cost += edges * (EDGE_FIXED + elements * EDGE_PER_ELEMENT)
    return cost


def _elements(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None:
        return None
    total = 1
    for axis, dim in enumerate(shape):
        total *= dim if isinstance(dim, int) else (1 if axis == 0 else NOMINAL_DIM)
    return total
