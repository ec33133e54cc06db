"""Whether int8 pays for a group of convolutions on ONNX Runtime CPU: a deterministic
estimate from shapes alone (same model, same decision), used by the ``int8`` preset.

An int8 convolution is faster than its fp32 one, but entering and leaving the integer
domain is not free: each activation quantized where a float op produced it costs a
QuantizeLinear, and each one a float op reads costs a DequantizeLinear, both passes over the
tensor (with ORT's layout changes). A chain of convolutions pays those once; a lone
convolution between float ops pays them for itself.

So the targets are split into *regions*, the layers joined by the activations they share
(a Conv's output read by the next Conv, both inputs of a residual Add), and a region of
Convs and Adds stays float when its estimated saving is smaller than the estimated cost of
its edges. A region holding any other layer (MatMul, Gemm, Attention) is kept:
``min_rows`` decides those.

The rates were fitted on a 2-core Xeon (AVX-512 VNNI, AMX), ONNX Runtime 1.32, batch 1
(``benchmarks/suites/int8_cost.py`` and seven lone Convs between HardSwish ops, 16-512
channels): int8 saves about 4 ps per multiply-accumulate (6 on 3x3 256-channel Convs), an
edge inside the network costs about 0.6 ns per element it converts, one at the graph's
input about 2.5 ns (ORT changes the layout there too). They predict the sign of all seven
lone-Conv results (from 16 channels 3x3 at 56 px, 0.88x, to 256 channels at 14 px, 1.82x)
and of the single-layer models (0.59x-1.03x).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import onnx_ir as ir

from onnxpress.ir.analysis import constant_array

#: seconds int8 saves per multiply-accumulate of a Conv whose output stays int8
SAVING_PER_MAC = 4e-12
#: seconds per element a region's edge converts, inside the graph and at its inputs, and
#: per edge (the op's own overhead)
EDGE_PER_ELEMENT, INPUT_EDGE_PER_ELEMENT, EDGE_FIXED = 0.6e-9, 2.5e-9, 2e-6
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
        saving = sum(_saving(t) for t in chosen)
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


def _saving(target) -> float:
    """Seconds int8 saves on a Conv whose output is quantized too (without it, ORT runs the
    Conv in float on dequantized weights: nothing saved), 0 for an Add (QLinearAdd is no
    faster than Add); infinite when its size is unknown, so that the region is kept."""
    node = target.node
    if node.op_type != "Conv" or len(target.activations) < 2:
        return 0.0
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    out = _elements(node.outputs[0])
    if weight is None or out is None:
        return math.inf
    return out * math.prod(weight.shape[1:]) * SAVING_PER_MAC  # C_in/groups x kernel each


def _edge_cost(values: Iterable[ir.Value], nodes: set[ir.Node]) -> float:
    """The Q where a value enters from outside the region and the DQ where an op outside it
    reads one (or where it leaves the graph)."""
    cost = 0.0
    for value in values:
        elements = _elements(value)
        if elements is None:
            return 0.0  # unknown sizes: keep the region
        if value.producer() is None:  # a graph input
            cost += EDGE_FIXED + elements * INPUT_EDGE_PER_ELEMENT
        elif value.producer() not in nodes:
            cost += EDGE_FIXED + elements * EDGE_PER_ELEMENT
        if any(use.node not in nodes for use in value.uses()):
            cost += EDGE_FIXED + elements * EDGE_PER_ELEMENT
    return cost


def _elements(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None:
        return None
    total = 1
    for axis, dim in enumerate(shape):
        known = isinstance(dim, int) and dim > 0  # exporters write -1 for "any" too
        total *= dim if known else (1 if axis == 0 else NOMINAL_DIM)
    return total
