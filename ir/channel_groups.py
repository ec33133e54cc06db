"""Channel dependency groups: the channels a structured prune must remove together.

A *space* is the channel axis one producer creates: a Conv's output channels, a Gemm's or
MatMul's output features. Channels flow forward unchanged through elementwise ops,
BatchNormalization, pooling, depthwise Conv, and Flatten/Reshape/reductions that only drop
unit or spatial axes; Concat lays spaces side by side (each at its offset); an elementwise
op reading two flows (a residual Add) ties their spaces together. A union-find over spaces
gives the groups. Every constant a channel touches is recorded as a ``Slice``: producers'
output rows, consumers' input columns at the offset Concat gave them, BatchNorm parameters,
per-channel constants, a depthwise Conv's filters, a Reshape's target shape.

LRN passes channels on too: its window then spans the kept neighbours, which changes what
it computes the way pruning any channel does (AlexNet, ZFNet), as Torch-Pruning treats it.

Grouped Convs and channel shuffles (ShuffleNet) are modelled exactly, as constraints on
which channels may go together rather than as assumptions:
- a grouped Conv's output is a space in ``group`` equal parts (``Group.segments``), each
  losing as many channels, so ``group`` still splits them evenly;
- its input, when one producer's channels fill it, is in ``group`` parts too
  (``Group.balance``: the part of each channel, through any shuffle); each part loses as
  many, and each group's filters lose their own columns (``Slice.parts``);
- a channel shuffle (Reshape ``[N, C, H, W] -> [N, g, C/g, H, W]``, Transpose of those two
  axes, Reshape back) is a fixed permutation: the flow after it keeps the shuffled order
  (``Flow.orders``, ``Slice.order``), and since pruned it must still be a shuffle of ``g``,
  the ``g`` pieces lose the same positions (``Group.ties``), which ``C/g`` shrinks by.
A shuffle over several producers' channels, or a grouped Conv reading several producers
(a Concat: equal losses would tie two groups' counts), is blocked.

Nothing is assumed safe: a group whose channels reach a graph output, an op not modelled
here (Softmax or LayerNormalization over them, Reshape to heads, Shape), or a Concat/Add
with a tensor whose channels are not tracked or are in another order, is *blocked* and
keeps the reasons. Only the main graph is analysed; a node with subgraphs blocks what it
reads. Channel axes are kept counted from the end (``-3`` for NCHW), as broadcasting
aligns them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array, static_shape
from onnxpress.ir.edit import describe
from onnxpress.ir.layers import linear_layer
from onnxpress.ir.shuffle import channel_shuffle

Role = Literal["producer", "consumer", "param", "shape", "group"]

#: elementwise ops of one tensor input (others, if any, are scalar attributes/constants)
_UNARY = frozenset({
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
    "Selu", "Erf", "Identity", "Dropout", "Neg", "Abs", "Sqrt", "Exp", "Log", "Softplus",
    "Gelu", "Mish", "Celu", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "PRelu"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"})
_REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin"})


@dataclasses.dataclass(frozen=True)
class Slice:
    """Input ``index`` of ``node`` is a constant whose ``axis`` holds this space's channels
    from ``offset`` on (``role="shape"``: a Reshape target whose entry ``axis`` counts
    them, divided by ``parts``; ``role="group"``: a depthwise Conv's ``group`` attribute,
    ``index`` -1). ``order``: after a channel shuffle, position ``p`` holds the space's
    channel ``order[p]`` (None: channel ``p``). A consumer with ``parts`` > 1 is a grouped
    Conv: its weight's ``axis`` holds the columns of one of ``parts`` equal groups."""

    node: ir.Node
    index: int
    axis: int
    offset: int
    role: Role
    order: tuple[int, ...] | None = None
    parts: int = 1


def local(item: Slice, removed: np.ndarray) -> np.ndarray:
    """Where the space's ``removed`` channels sit along ``item``'s axis (from its offset),
    ascending."""
    if item.order is None:
        return np.asarray(removed, np.int64)
    return np.flatnonzero(np.isin(np.asarray(item.order), removed))


@dataclasses.dataclass(frozen=True)
class Flow:
    """A value's tracked channels: the axis (from the end) and its segments in order, each
    a space id (None: channels no producer here owns) and its length; ``orders`` per
    segment, the shuffled order of its space's channels (None: in order). ``parts`` > 1:
    inside a channel shuffle, the axis holds one of ``parts`` equal pieces of them."""

    axis: int
    segments: tuple[tuple[int | None, int], ...]
    orders: tuple[tuple[int, ...] | None, ...] | None = None
    parts: int = 1

    @property
    def size(self) -> int:
        return sum(length for _, length in self.segments)

    def order(self, index: int) -> tuple[int, ...] | None:
        return None if self.orders is None else self.orders[index]

    def offsets(self) -> Iterable[tuple[int | None, int, int]]:
        start = 0
        for space, length in self.segments:
            yield space, start, length
            start += length


@dataclasses.dataclass
class Group:
    """Spaces tied together: the same channel indices go from all of them."""

    name: str  # the first producer's node name
    size: int
    spaces: list[int]
    slices: list[Slice]
    values: list[tuple[ir.Value, Flow]]  # every value carrying the group's channels
    blocked: list[str]
    #: equal parts the channels fall in, each losing as many: a grouped Conv's output groups
    segments: int = 1
    #: ``[g, n]`` arrays of channels: the ``g`` in one column go together (a shuffle's
    #: equal pieces lose the same positions)
    ties: list[np.ndarray] = dataclasses.field(default_factory=list)
    #: per channel, the part it falls in; every part loses as many (a grouped Conv's
    #: input groups, after any shuffle)
    balance: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def producers(self) -> list[Slice]:
        return [s for s in self.slices if s.role == "producer"]

    @property
    def kind(self) -> str:
        """"conv" when a Conv produces the channels, else "linear" (Gemm/MatMul)."""
        return "conv" if any(s.node.op_type == "Conv" for s in self.producers) else "linear"


class _Analysis:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.flows: dict[ir.Value, Flow] = {}
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.owner: list[str] = []
        self.slices: list[list[Slice]] = []
        self.blocked: list[list[str]] = []
        self.segments: list[int] = []
        self.ties: list[list[np.ndarray]] = []
        self.balance: list[list[np.ndarray]] = []
        self.done: set[ir.Node] = set()  # a shuffle's Transpose and Reshape, read with it

    # -- union-find over spaces
    def new_space(self, size: int, owner: str, segments: int = 1) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        self.owner.append(owner)
        self.segments.append(segments)
        self.slices.append([])
        self.blocked.append([])
        self.ties.append([])
        self.balance.append([])
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def block(self, flow: Flow | None, reason: str) -> None:
        for space, _ in flow.segments if flow is not None else ():
            if space is not None:
                self.blocked[space].append(reason)

    def record(self, flow: Flow, node: ir.Node, index: int, axis: int, role: Role,
               parts: int = 1) -> None:
        for number, (space, offset, _) in enumerate(flow.offsets()):
            if space is not None:
                self.slices[space].append(Slice(node, index, axis, offset, role,
                                                flow.order(number), parts))

    # -- the walk
    def run(self) -> list[Group]:
        for node in self.graph:
            if node in self.done:
                continue
            inflows = [self.flows.get(v) if v is not None else None for v in node.inputs]
            if node.domain not in ("", "ai.onnx") or any(
                    a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                    for a in node.attributes.values()):
                self._block_all(node, inflows, "is not a standard op")
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                handler = self._generic
            handler(node, inflows)
        for value in self.graph.outputs:
            self.block(self.flows.get(value), f"graph output {value.name!r}")
        return self._groups()

    def _block_all(self, node: ir.Node, inflows: Sequence[Flow | None], why: str) -> None:
        for flow in inflows:
            self.block(flow, f"{describe(node)} {why}")

    def _generic(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        op = node.op_type
        data = inflows[0] if inflows else None
        if op in _UNARY and data is not None and all(f is None for f in inflows[1:]):
            self._pass(node, data)
        elif (op in _POOLS or op == "LRN") and data is not None:
            self._pass(node, data)
        elif op in _BINARY:
            self._elementwise(node, inflows)
        elif op in _REDUCTIONS and data is not None:
            self._reduce(node, data)
        else:
            self._block_all(node, inflows, "reads them (not modelled)")

    def _pass(self, node: ir.Node, flow: Flow, axis: int | None = None) -> None:
        self.flows[node.outputs[0]] = flow if axis is None else dataclasses.replace(
            flow, axis=axis)

    def _rank(self, value: ir.Value | None) -> int | None:
        return len(value.shape) if value is not None and value.shape is not None else None

    # -- producers and consumers
    def _consume(self, node: ir.Node, flow: Flow | None, want_axis: int, weight: int,
                 weight_axis: int) -> bool:
        """The node reads ``flow`` on ``want_axis`` and contracts it with its weight."""
        if flow is None:
            return True
        if flow.axis != want_axis:
            self.block(flow, f"{describe(node)} contracts another axis")
            return False
        self.record(flow, node, weight, weight_axis, "consumer")
        return True

    def _produce(self, node: ir.Node, size: int, axis: int,
                 rows: Sequence[tuple[int, int]], segments: int = 1) -> None:
        space = self.new_space(size, node.name or node.op_type, segments)
        flow = Flow(axis, ((space, size),))
        for index, weight_axis in rows:
            self.record(flow, node, index, weight_axis, "producer")
        self.flows[node.outputs[0]] = flow

    def _op_Conv(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        flow = inflows[0]
        if weight is None:
            self.block(flow, f"Conv {node.name!r} has a computed weight (run cleanup first)")
            return
        groups = node.attributes.get_int("group", 1)
        out_channels, per_group = weight.shape[:2]
        channel_axis = 1 - weight.ndim
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        if groups == 1:
            if self._consume(node, flow, channel_axis, 1, 1):
                rows = [(1, 0)] + ([(2, 0)] if has_bias else [])
                self._produce(node, out_channels, channel_axis, rows)
            return
        if per_group == 1 and groups == out_channels and flow is not None \
                and flow.axis == channel_axis and flow.size == groups:
            self.record(flow, node, 1, 0, "param")  # depthwise: channel c -> channel c
            if has_bias:
                self.record(flow, node, 2, 0, "param")
            self.record(flow, node, -1, 0, "group")  # its group count shrinks with them
            self._pass(node, flow)
            return
        # a grouped Conv: what it writes is a space in ``groups`` equal parts, each losing
        # as many channels, so that ``group`` still splits them evenly (AlexNet)
        if flow is not None:
            self._grouped_input(node, flow, groups, per_group, channel_axis)
        if out_channels % groups == 0:
            rows = [(1, 0)] + ([(2, 0)] if has_bias else [])
            self._produce(node, out_channels, channel_axis, rows, segments=groups)

    def _grouped_input(self, node: ir.Node, flow: Flow, groups: int, per_group: int,
                       channel_axis: int) -> None:
        """A grouped Conv reads input positions ``q * per_group`` on with group ``q``'s
        filters only. Pruned, it stays exact when every group loses as many channels: the
        cut keeps the order, so each kept channel stays in its group, and each group's
        filters lose their own columns (positions may differ between groups). One
        producer's channels only: equal losses across two groups would tie their counts."""
        reason = f"Conv {node.name!r} is grouped ({groups} groups)"
        if flow.axis != channel_axis or flow.parts != 1:
            self.block(flow, f"{reason} and reads them on another axis")
            return
        space = flow.segments[0][0]
        if len(flow.segments) != 1 or space is None or flow.size != groups * per_group:
            self.block(flow, f"{reason} and reads channels of more than one producer")
            return
        positions = np.arange(flow.size)
        order = flow.order(0)
        labels = np.empty(flow.size, np.int64)
        labels[positions if order is None else np.asarray(order)] = positions // per_group
        self.balance[space].append(labels)
        self.record(flow, node, 1, 1, "consumer", parts=groups)

    def _op_Gemm(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        weight, layer = constant_array(node.inputs[1]), linear_layer(node)
        if weight is None or layer is None or layer.trans_a or weight.ndim != 2:
            self._block_all(node, inflows, "is a Gemm without a constant weight")
            return
        if not self._consume(node, inflows[0], -1, 1, layer.in_axis):
            return
        out = weight.shape[layer.out_axis]
        rows = [(1, layer.out_axis)]
        bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
        if bias is not None and bias.shape and bias.shape[-1] == out and bias.size == out:
            rows.append((2, bias.ndim - 1))
        elif bias is not None and bias.size != 1:
            self.block(inflows[0], f"Gemm {node.name!r} has a bias of shape {bias.shape}")
            return
        self._produce(node, out, -1, rows)

    def _op_MatMul(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        weight = constant_array(node.inputs[1])
        if weight is None or weight.ndim != 2 or inflows[1] is not None:
            self._block_all(node, inflows, "multiplies two activations")
            return
        if self._consume(node, inflows[0], -1, 1, 0):
            self._produce(node, weight.shape[1], -1, [(1, 1)])

    def _op_BatchNormalization(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        flow, rank = inflows[0], self._rank(node.inputs[0])
        if flow is None:
            return
        if rank is None or flow.axis != 1 - rank or any(
                o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            self.block(flow, f"BatchNormalization {node.name!r}: unknown rank or training "
                       "outputs in use")
            return
        for index in range(1, 5):
            self.record(flow, node, index, 0, "param")
        self._pass(node, flow)

    def _elementwise(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        flows = [f for f in inflows if f is not None]
        if not flows:
            return
        first = flows[0]
        lengths = [length for _, length in first.segments]
        for other in flows[1:]:
            if other.axis != first.axis or [n for _, n in other.segments] != lengths:
                self._block_all(node, inflows, "joins channel layouts that differ")
                return
            if other.orders != first.orders:  # a shuffled and an unshuffled flow
                self._block_all(node, inflows, "joins channels in different orders")
                return
        for index, (value, flow) in enumerate(zip(node.inputs, inflows)):
            if flow is not None or value is None:
                continue
            array = constant_array(value)
            if array is None:
                self._block_all(node, inflows, f"joins them with {value.name!r}, whose "
                                "channels are not tracked")
                return
            if array.ndim >= -first.axis and array.shape[first.axis] != 1:
                if array.shape[first.axis] != first.size:
                    self._block_all(node, inflows, "broadcasts a constant over them")
                    return
                self.record(first, node, index, array.ndim + first.axis, "param")
        for other in flows[1:]:
            for (a, _), (b, _) in zip(first.segments, other.segments):
                if a is None or b is None:
                    if a != b:
                        self._block_all(node, inflows, "joins them with untracked channels")
                        return
                else:
                    self.union(a, b)
        self._pass(node, first)

    def _op_Concat(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        rank = self._rank(node.outputs[0]) or self._rank(node.inputs[0])
        axis = node.attributes.get_int("axis", 0)
        if not any(inflows):
            return
        if rank is None:
            self._block_all(node, inflows, "has an unknown rank")
            return
        axis = axis - rank if axis >= 0 else axis
        channel_axis = next(f.axis for f in inflows if f is not None)
        if axis != channel_axis:
            self._block_all(node, inflows, "concatenates along another axis")
            return
        segments: list[tuple[int | None, int]] = []
        orders: list[tuple[int, ...] | None] = []
        for value, flow in zip(node.inputs, inflows):
            if flow is not None and flow.axis == axis and flow.parts == 1:
                segments.extend(flow.segments)
                orders.extend(flow.order(i) for i in range(len(flow.segments)))
                continue
            shape = static_shape(value) if value is not None else None
            if flow is not None or shape is None:
                self._block_all(node, inflows, "concatenates them with a tensor of unknown "
                                "channel count")
                return
            segments.append((None, shape[axis]))
            orders.append(None)
        self.flows[node.outputs[0]] = Flow(axis, tuple(segments), tuple(orders) if any(
            o is not None for o in orders) else None)

    def _op_Transpose(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        flow, rank = inflows[0], self._rank(node.inputs[0])
        if flow is None:
            return
        perm = node.attributes.get_ints("perm", None)
        if rank is None or perm is None:
            self.block(flow, f"Transpose {node.name!r}: unknown rank or permutation")
            return
        self._pass(node, flow, list(perm).index(rank + flow.axis) - rank)

    def _op_Flatten(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        self._squeeze_like(node, inflows[0])

    def _op_Squeeze(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        self._squeeze_like(node, inflows[0])

    def _op_Reshape(self, node: ir.Node, inflows: Sequence[Flow | None]) -> None:
        flow = inflows[0]
        target = constant_array(node.inputs[1])
        if flow is None:
            return
        if target is None or not self._squeeze_like(node, flow, record=False):
            reason = f"Reshape {node.name!r} reshapes them"
            if target is not None:
                reason = self._shuffle(node, flow, target) or ""
            if reason:
                self.block(flow, reason)
            return
        out_axis = self.flows[node.outputs[0]].axis
        if target[out_axis] == flow.size:  # a literal count: it must shrink with them
            self.record(flow, node, 1, len(target) + out_axis, "shape")
        elif target[out_axis] not in (-1, 0):
            del self.flows[node.outputs[0]]
            self.block(flow, f"Reshape {node.name!r} reshapes them")

    def _shuffle(self, node: ir.Node, flow: Flow, target: np.ndarray) -> str | None:
        """A channel shuffle (:mod:`onnxpress.ir.shuffle`) starting at ``node``. Pruned, it
        stays a shuffle of ``g`` only when each of the ``g`` pieces loses the same
        positions (``C/g`` shrinks, ``g`` stays): those channels are tied, and the flow
        after it carries the shuffled order. None when modelled, else why not."""
        found = channel_shuffle(node, flow.axis, flow.size, target)
        if isinstance(found, str):
            return found
        pieces, back = found
        space = flow.segments[0][0]
        if flow.parts != 1 or len(flow.segments) != 1 or space is None:
            return f"channel shuffle at {node.name!r} mixes channels of more than one producer"
        width = flow.size // pieces
        before = np.arange(flow.size) if flow.order(0) is None else np.asarray(flow.order(0))
        self.ties[space].append(before.reshape(pieces, width))
        after = tuple(int(c) for c in before.reshape(pieces, width).T.reshape(-1))
        rank = len(target) - 1
        if target[rank + flow.axis + 1] == width:
            self.record(flow, node, 1, rank + flow.axis + 1, "shape", parts=pieces)
        back_target = constant_array(back.inputs[1])
        assert back_target is not None
        if back_target[rank + flow.axis] == flow.size:
            self.record(flow, back, 1, rank + flow.axis, "shape")
        transpose = back.inputs[0].producer()
        assert transpose is not None
        self.flows[node.outputs[0]] = dataclasses.replace(flow, parts=pieces)
        self.flows[transpose.outputs[0]] = dataclasses.replace(flow, axis=flow.axis - 1,
                                                               parts=pieces)
        self.flows[back.outputs[0]] = Flow(flow.axis, flow.segments, (after,))
        self.done.update((transpose, back))
        return None

    def _squeeze_like(self, node: ir.Node, flow: Flow | None, record: bool = True) -> bool:
        """``[N, C, 1, 1] -> [N, C]``: only unit axes after the channels disappear (the
        leading axes may be symbolic, but equal)."""
        if flow is None:
            return True
        before, after = node.inputs[0].shape, node.outputs[0].shape
        if before is None or after is None:
            self.block(flow, f"{describe(node)}: shapes unknown")
            return False
        before, after = list(before.dims), list(after.dims)
        position = len(before) + flow.axis
        if (before[:position + 1] != after[:position + 1] or len(after) != position + 1
                or any(d != 1 for d in before[position + 1:])):
            if record:
                self.block(flow, f"{describe(node)} reshapes them")
            return False
        self._pass(node, flow, -1)
        return True

    def _reduce(self, node: ir.Node, flow: Flow) -> None:
        rank = self._rank(node.inputs[0])
        axes = node.attributes.get_ints("axes", None)
        if axes is None and len(node.inputs) > 1:
            array = constant_array(node.inputs[1])
            axes = None if array is None else [int(a) for a in array]
        if rank is None or axes is None:
            self.block(flow, f"{describe(node)}: axes or rank unknown")
            return
        axes = [a % rank for a in axes]
        channel = rank + flow.axis
        if channel in axes:
            self.block(flow, f"{describe(node)} reduces over them")
            return
        keep = node.attributes.get_int("keepdims", 1)
        after = 0 if keep else sum(a > channel for a in axes)
        self._pass(node, flow, flow.axis + after)

    # -- results
    def _groups(self) -> list[Group]:
        by_root: dict[int, Group] = {}
        for space in range(len(self.parent)):
            root = self.find(space)
            group = by_root.setdefault(root, Group(self.owner[root], self.sizes[root], [],
                                                   [], [], []))
            group.spaces.append(space)
            group.slices.extend(self.slices[space])
            group.blocked.extend(self.blocked[space])
            group.ties.extend(self.ties[space])
            group.balance.extend(self.balance[space])
            group.segments = math.lcm(group.segments, self.segments[space])
        for value, flow in self.flows.items():
            for space in {s for s, _ in flow.segments if s is not None}:
                by_root[self.find(space)].values.append((value, flow))
        return list(by_root.values())


def channel_groups(graph: ir.Graph) -> list[Group]:
    """The dependency groups of ``graph``'s main body, in order of their first producer."""
    return _Analysis(graph).run()


def keep_mask(length: int, slices: Iterable[tuple[Slice, np.ndarray]]) -> np.ndarray:
    """Along a constant's channel axis of ``length``: False where a slice's removed
    channels (the space's indices, placed by the slice's offset and order) sit."""
    mask = np.ones(length, bool)
    for item, removed in slices:
        mask[item.offset + local(item, removed)] = False
    return mask
