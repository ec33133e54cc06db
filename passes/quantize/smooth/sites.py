"""Where ``smooth`` can migrate a per-channel scale, and which constants each site rescales.

A site is an activation ``X`` (channels on its last axis, ``C`` of them) whose producer can
absorb ``1/s`` per channel and whose every reader can absorb ``s`` in a constant weight, so
that ``(X / s) @ (diag(s) W) == X @ W`` holds with nothing inserted in the graph.

Producers (``X -> X / s``):
- LayerNormalization, RMSNormalization and ONNX Runtime's SkipLayerNormalization,
  SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization: ``gamma / s`` (and
  ``beta / s``), since their output is ``gamma * x_hat + beta`` per channel. A residual
  ``Add -> LayerNormalization`` is the same site: what feeds the norm does not matter.
- a linear layer (MatMul / Gemm with a constant weight, then an optional constant bias Add),
  optionally followed by Relu or LeakyRelu, which are positively homogeneous
  (``relu(z / s) == relu(z) / s`` for ``s > 0``): the weight's output channels and the bias
  ``/ s``. GELU is not homogeneous and attention outputs mix channels through reshapes: the
  MatMuls they feed are not sites (one summary note says how many, by producer op).
Readers (``X / s`` in, same output):
- MatMul(X, W), W a constant ``[C, N]``: row ``j`` of W times ``s_j``;
- Gemm(X, W) not reading X transposed: W's input-feature rows (columns when it reads W
  transposed);
- through Gather on an axis other than the last (a class-token pick): it moves rows, never
  mixes channels.

A site is skipped, with the reason, when ``X`` has any other reader (an ``Add`` of the
residual stream in post-norm BERT, where the normalized value *is* the residual: dividing it
by ``s`` would change what the next block adds to), is a graph output, or a constant it
needs is not constant or not per-channel. Only the main graph is searched; subgraphs are
left whole.
"""

from __future__ import annotations

import collections
import dataclasses

import onnx_ir as ir

from onnxpress.ir.analysis import constant_array, is_constant
from onnxpress.ir.edit import MS_DOMAIN, describe
from onnxpress.ir.layers import linear_layer

__all__ = ["Edit", "Site", "Sites", "find_sites"]

#: (domain, op) -> input index of gamma, of beta (None: the op has no beta)
_NORMS: dict[tuple[str, str], tuple[int, int | None]] = {
    ("", "LayerNormalization"): (1, 2),
    ("", "RMSNormalization"): (1, None),
    ("", "SimplifiedLayerNormalization"): (1, None),
    (MS_DOMAIN, "SkipLayerNormalization"): (2, 3),
    (MS_DOMAIN, "SkipSimplifiedLayerNormalization"): (2, None),
}
_HOMOGENEOUS = ("Relu", "LeakyRelu")


@dataclasses.dataclass(frozen=True)
class Edit:
    """Multiply the constant at ``node.inputs[index]`` by ``s ** power`` along ``axis``."""

    node: ir.Node
    index: int
    axis: int
    power: int  # -1 on the producer side, +1 on the readers' weights


@dataclasses.dataclass
class Site:
    value: ir.Value  # X: calibrated per channel (last axis), then divided by s
    producer: ir.Node
    channels: int
    absorb: list[Edit]  # producer constants, divided by s
    readers: list[Edit]  # reader weights, multiplied by s (input-channel axis)


@dataclasses.dataclass
class Sites:
    sites: list[Site]
    notes: list[str]
    skipped: int


def find_sites(graph: ir.Graph) -> Sites:
    """Every site of ``graph`` in graph order, plus a note per skipped one."""
    order = {node: i for i, node in enumerate(graph)}
    roots: dict[ir.Value, None] = {}  # insertion-ordered set
    for node in graph:
        if _weight_axis(node) is not None and node.inputs[0] is not None:
            roots[_root(node.inputs[0])] = None
    sites, notes, skipped, others = [], [], 0, collections.Counter()
    for root in roots:
        found = _site(root)
        if isinstance(found, Site):
            sites.append(found)
        elif isinstance(found, str):
            producer = root.producer()
            assert producer is not None
            notes.append(f"{producer.op_type} {producer.name!r} not smoothed: {found}")
            skipped += 1
        else:
            producer = root.producer()
            others["graph input" if producer is None else producer.op_type] += 1
    if others:
        kinds = ", ".join(f"{op} x{n}" for op, n in sorted(others.items()))
        notes.append(f"{sum(others.values())} MatMul/Gemm inputs not smoothed: their producer "
                     f"cannot absorb a per-channel scale ({kinds}; e.g. GELU, attention)")
    sites.sort(key=lambda site: order[site.producer])
    return Sites(sites, notes, skipped)


def _site(root: ir.Value) -> Site | str | None:
    """The site at ``root``; why it cannot be one; None when its producer is no candidate."""
    absorb = _absorb(root)
    if not isinstance(absorb, list):
        return absorb
    readers = _readers(root)
    if isinstance(readers, str):
        return readers
    if not root.name:
        return "its output has no name to calibrate"
    shapes = [_constant_shape(e.node.inputs[e.index]) for e in [*readers, *absorb]]
    if any(shape is None for shape in shapes):
        return "a constant it needs has no readable value"
    channels = shapes[0][readers[0].axis]  # type: ignore[index]
    for edit, shape in zip([*readers, *absorb], shapes):
        assert shape is not None
        if edit.power > 0 and shape[edit.axis] != channels:
            return f"its readers disagree on the channel count ({edit.node.name!r})"
        if edit.power < 0 and shape and shape[edit.axis] not in (1, channels):
            return f"input {edit.index} of {edit.node.name!r} is not per-channel (shape {shape})"
    producer = root.producer()
    assert producer is not None
    return Site(root, producer, channels, absorb, readers)


def _root(value: ir.Value) -> ir.Value:
    """Up through channel-preserving Gathers to the value they pick from."""
    producer = value.producer()
    while producer is not None and _keeps_channels(producer):
        value = producer.inputs[0]  # type: ignore[assignment]
        producer = value.producer()
    return value


def _keeps_channels(node: ir.Node) -> bool:
    """A Gather on a known-rank input along an axis other than the last."""
    if node.op_type != "Gather" or node.domain != "" or node.inputs[0] is None:
        return False
    shape = node.inputs[0].shape
    if shape is None:
        return False
    axis = node.attributes.get_int("axis", 0)
    return axis % len(shape) != len(shape) - 1 if len(shape) else False


def _readers(root: ir.Value) -> list[Edit] | str:
    """The weight of every MatMul/Gemm reading ``root`` (through channel-preserving Gathers),
    or why some reader cannot absorb the scale."""
    edits: list[Edit] = []
    stack = [root]
    while stack:
        value = stack.pop()
        if value.is_graph_output():
            return f"{value.name!r} is a graph output"
        for use in value.uses():
            node = use.node
            if use.idx == 0 and _keeps_channels(node):
                stack.append(node.outputs[0])
                continue
            axis = _weight_axis(node) if use.idx == 0 else None
            if axis is None:
                why = (" (e.g. the residual Add of a post-norm block: X/s would change the "
                       "residual stream)") if node.op_type == "Add" else ""
                return (f"its output also feeds {describe(node)}, which cannot "
                        f"absorb the scale{why}")
            edits.append(Edit(node, 1, axis, +1))
    return edits


def _weight_axis(node: ir.Node) -> int | None:
    """The input-channel axis of a MatMul/Gemm's constant 2-D weight; None if it has none."""
    if node.domain != "" or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    shape = _constant_shape(node.inputs[1])
    if shape is None or len(shape) != 2:
        return None
    layer = linear_layer(node)
    if node.op_type == "MatMul":
        return 0
    return None if layer is None or layer.trans_a else layer.in_axis


def _absorb(root: ir.Value) -> list[Edit] | str | None:
    producer = root.producer()
    if producer is None:
        return None
    domain = "" if producer.domain == "ai.onnx" else producer.domain
    norm = _NORMS.get((domain, producer.op_type))
    if norm is not None:  # only the normalized output (not SkipLayerNorm's sum)
        return _norm_edits(producer, *norm) if root is producer.outputs[0] else None
    if producer.op_type in _HOMOGENEOUS and domain == "" and producer.inputs[0] is not None:
        inner = producer.inputs[0]
        edits = _linear_edits(inner)
        if isinstance(edits, list) and _shared(inner):
            return f"the input of {producer.op_type} {producer.name!r} has other readers"
        return edits
    return _linear_edits(root)


def _norm_edits(node: ir.Node, gamma: int, beta: int | None) -> list[Edit] | str:
    indices = [gamma] + ([beta] if beta is not None and _present(node, beta) else [])
    if not _present(node, gamma) or not all(is_constant(node.inputs[i]) for i in indices):
        return "its scale or bias is not constant"
    return [Edit(node, i, -1, -1) for i in indices]


def _linear_edits(value: ir.Value) -> list[Edit] | str | None:
    """``value`` = MatMul/Gemm(a, W) [+ constant bias]: W's output channels and the bias."""
    node = value.producer()
    if node is None or node.domain != "":
        return None
    if node.op_type == "Add":
        for i in (0, 1):
            bias, inner = node.inputs[i], node.inputs[1 - i]
            if not is_constant(bias) or inner is None:
                continue
            edits = _linear_edits(inner)
            if isinstance(edits, list) and _shared(inner):
                return f"the output of {inner.producer().name!r} has other readers"  # type: ignore
            return edits + [Edit(node, i, -1, -1)] if isinstance(edits, list) else edits
        return None
    in_axis = _weight_axis(node)
    if in_axis is None:
        return None
    edits = [Edit(node, 1, 1 - in_axis, -1)]
    if node.op_type == "Gemm" and _present(node, 2):
        if not is_constant(node.inputs[2]):
            return f"the bias of Gemm {node.name!r} is not constant"
        edits.append(Edit(node, 2, -1, -1))
    return edits


def _present(node: ir.Node, index: int) -> bool:
    return len(node.inputs) > index and node.inputs[index] is not None


def _shared(value: ir.Value) -> bool:
    return len(value.uses()) != 1 or value.is_graph_output()


def _constant_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of a constant, without reading its bytes when it is an initializer."""
    if not is_constant(value):
        return None
    assert value is not None
    if value.const_value is not None:
        return tuple(int(d) for d in value.const_value.shape.dims)
    array = constant_array(value)
    return None if array is None else array.shape
