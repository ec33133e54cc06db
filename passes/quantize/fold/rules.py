"""The pattern rules of ``fold-qdq`` (onnxscript's rewriter), each bit-exact:

- ``Q(DQ(q, s, zp), s, zp)``            -> ``q``            (``RedundantPair``)
- ``Q(op(DQ(q, s, zp), ...), s, zp)``   -> ``op(q, ...)``   (``MoveThrough``) for op in
  Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice, Gather, MaxPool, and
  ``Q(Concat(DQ(q1), DQ(q2), ...))``   -> ``Concat(q1, q2, ...)`` with equal parameters
  (int8 pairs only with ``int8_moves``), and
- ``Shape(DQ(q))``                      -> ``Shape(q)``     (``ShapeOfQuantized``; what
  ``x.reshape(x.shape[0], -1)`` exports to leaves the DQ's last user there)
- ``Q(Relu(x))``, ``Q(Clip(x, lo, hi))`` -> ``Q(x)``         (``AbsorbActivation``)

Why exact: with equal parameters ``Q(DQ(q)) == q`` for every q (``round_trip_exact`` bounds
the rounding error below half a step). The ops moved only copy or select elements, so they
commute with the elementwise DQ; MaxPool selects a maximum, which commutes with DQ because
DQ is increasing (every scale > 0). Per-axis parameters move only through ops that keep
the channel of each element (Transpose maps the axis; Slice, Gather, Concat, MaxPool must
not touch it). Relu/Clip are absorbed when Q already saturates everything they cut: Q is
increasing, so if Q(lo) is qmin and Q(hi) is qmax (for Relu: zero point = qmin), values
below lo or above hi quantize to the same level with or without the clip. NaN inputs of a
Relu are the one exception (Relu(NaN) may be 0 or NaN; Q(NaN) is unspecified).

A DequantizeLinear whose output has other users stays for them (the pass removes it once
unused); an intermediate op whose output has other users does not match. A rule that matched
the structure but could not prove exactness records why in ``RuleLog.kept``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.analysis import constant_array, opset_version
from onnxpress.ir.edit import describe
from onnxpress.ir.qdq import (
    INT_RANGES,
    QdqParams,
    is_op,
    rank_of,
    read,
    round_trip_exact,
)

__all__ = ["MOVABLE_OPS", "RuleLog", "absorb_rules", "move_rules", "pair_rules"]

MOVABLE_OPS = (
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "MaxPool",
    "Concat",
)
_BYTE_TYPES = (ir.DataType.INT8, ir.DataType.UINT8)


@dataclasses.dataclass
class RuleLog:
    """What the rules hand back to the pass: nodes left alone with the reason, nodes and
    constants that may have lost their last user, the Identity nodes standing in for removed
    pairs."""

    kept: dict[ir.Node, str] = dataclasses.field(default_factory=dict)
    maybe_dead: list[ir.Node] = dataclasses.field(default_factory=list)
    maybe_unused: list[ir.Value | None] = dataclasses.field(default_factory=list)
    identities: list[ir.Node] = dataclasses.field(default_factory=list)

    def keep(self, node: ir.Node, reason: str) -> MatchResult:
        self.kept[node] = reason
        return MatchResult().fail(reason)

    def accept(self, node: ir.Node) -> MatchResult:
        self.kept.pop(node, None)
        return MatchResult()


class _Rule(RewriteRuleClassBase):
    def __init__(self, log: RuleLog, name: str) -> None:
        super().__init__(name)
        self.log = log


def _pair_reason(dq: ir.Node, q: ir.Node, moved: ir.Node | None = None) -> str | None:
    """None when ``q`` undoes ``dq`` exactly (through ``moved``, if given)."""
    source, target = read(dq), read(q)
    if isinstance(source, str):
        return f"DequantizeLinear {dq.name!r}: {source}"
    if isinstance(target, str):
        return target
    reason = round_trip_exact(source)
    if reason:
        return reason
    axis = None
    if not source.per_tensor:
        if source.block_size:
            if moved is not None:
                return f"blocked parameters do not move through {moved.op_type}"
        elif moved is not None:
            mapped = _moved_axis(moved, source.axis, rank_of(dq.inputs[0]))
            if isinstance(mapped, str):
                return mapped
            axis = mapped
    if not source.same_as(target, axis):
        return (f"requantization from DequantizeLinear {dq.name!r} with other parameters "
                "(it rounds; left as is)")
    return None


class RedundantPair(_Rule):
    def pattern(self, op, x):
        return op.QuantizeLinear(x, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, out) -> MatchResult:
        dq = x.producer()
        if not is_op(dq, "DequantizeLinear"):
            return MatchResult().fail("not fed by DequantizeLinear")
        q = out.producer()
        reason = _pair_reason(dq, q)
        return self.log.keep(q, reason) if reason else self.log.accept(q)

    def rewrite(self, op, x, out):
        dq = x.producer()
        self.log.maybe_dead.append(dq)
        result = op.Identity(dq.inputs[0])
        self.log.identities.append(result.producer())
        return result


class _OpThenQuantize(_Rule):
    """A rule whose pattern is ``Q(op(x, ...))`` for one op type; ``mid`` is op's output."""

    title = "{}"

    def __init__(self, log: RuleLog, op_type: str) -> None:
        super().__init__(log, self.title.format(op_type))
        self.op_type = op_type

    def pattern(self, op, x):
        mid = getattr(op, self.op_type)(x, _allow_other_inputs=True, _outputs=["mid"])
        return op.QuantizeLinear(mid, _allow_other_inputs=True, _outputs=["out"])


class MoveThrough(_OpThenQuantize):
    title = "MoveQdqThrough{}"

    def __init__(self, log: RuleLog, op_type: str, int8_moves: bool = False) -> None:
        super().__init__(log, op_type)
        self.int8_moves = int8_moves

    def _sources(self, node: ir.Node) -> list[ir.Value | None]:
        return list(node.inputs) if node.op_type == "Concat" else [node.inputs[0]]

    def check(self, context, x, mid, out) -> MatchResult:
        if not is_op(x.producer(), "DequantizeLinear"):
            return MatchResult().fail("not fed by DequantizeLinear")
        node, q = mid.producer(), out.producer()
        dqs = [v.producer() if v is not None else None for v in self._sources(node)]
        if not all(is_op(dq, "DequantizeLinear") for dq in dqs):
            return self.log.keep(q, f"an input of {describe(node)} is not dequantized")
        for dq in dqs:
            reason = _pair_reason(dq, q, node)
            if reason:
                return self.log.keep(q, f"{describe(node)}: {reason}")
        qtype = read(q).qtype  # readable: _pair_reason said so
        if qtype not in _BYTE_TYPES:
            return self.log.keep(q, f"{describe(node)} would run on {qtype.name}, "
                                    "not int8/uint8")
        if self.op_type == "MaxPool" and (opset_version(context.model) or 0) < 12:
            return self.log.keep(q, "MaxPool runs on int8/uint8 from opset 12")
        if qtype == ir.DataType.INT8 and not self.int8_moves:
            return self.log.keep(q, f"{describe(node)} left between int8 pairs, "
                                    "where ORT on x86 fuses them (int8_moves=true moves them)")
        return self.log.accept(q)

    def rewrite(self, op, x, mid, out):
        node = mid.producer()
        dqs = [v.producer() for v in self._sources(node)]
        self.log.maybe_dead.extend(dqs)
        quantized = [dq.inputs[0] for dq in dqs]
        inputs = quantized if node.op_type == "Concat" else [*quantized, *node.inputs[1:]]
        return op.op(node.op_type, *inputs, _domain=node.domain, _name=node.name,
                     **dict(node.attributes))


class ShapeOfQuantized(_Rule):
    """``Shape(DQ(q))`` -> ``Shape(q)``: a shape does not depend on the values (exact)."""

    def pattern(self, op, x):
        return op.Shape(x, _outputs=["out"])

    def check(self, context, x, out) -> MatchResult:
        if not is_op(x.producer(), "DequantizeLinear"):
            return MatchResult().fail("not fed by DequantizeLinear")
        return MatchResult()

    def rewrite(self, op, x, out):
        dq, node = x.producer(), out.producer()
        self.log.maybe_dead.append(dq)
        return op.op("Shape", dq.inputs[0], _name=node.name, **dict(node.attributes))


def _moved_axis(node: ir.Node, axis: int, rank: int | None) -> int | str:
    """Where a per-axis channel axis ends up after ``node``, or why it cannot be followed."""
    op = node.op_type
    if op == "Transpose":
        perm = node.attributes.get_ints("perm")
        if perm is None:
            if rank is None:
                return "Transpose without perm over an unknown rank"
            perm = list(reversed(range(rank)))
        return list(perm).index(axis)
    if op == "MaxPool":
        return axis if axis in (0, 1) else "MaxPool pools over the quantization axis"
    if op in ("Concat", "Slice", "Gather"):
        touched = _touched_axes(node, rank)
        if isinstance(touched, str):
            return touched
        if axis in touched:
            return f"{op} works along the quantization axis"
        if op != "Gather" or axis < touched[0]:
            return axis
        index_rank = rank_of(node.inputs[1])
        return "Gather indices of unknown rank" if index_rank is None else axis + index_rank - 1
    return f"per-axis parameters do not move through {op}"


def _touched_axes(node: ir.Node, rank: int | None) -> list[int] | str:
    """The axes a Concat joins along, a Slice cuts or a Gather indexes, non-negative."""
    if node.op_type == "Slice":
        axes = _slice_axes(node)
        if axes is None:
            return "Slice axes are not constant"
    else:
        axes = [node.attributes.get_int("axis", 0)]
    if any(a < 0 for a in axes):
        if rank is None:
            return f"{node.op_type} names a negative axis over an unknown rank"
        axes = [a % rank for a in axes]
    return axes


def _slice_axes(node: ir.Node) -> list[int] | None:
    inputs = list(node.inputs) + [None] * 5
    if inputs[3] is not None:
        axes = constant_array(inputs[3])
        return None if axes is None else [int(a) for a in axes]
    starts = constant_array(inputs[1])
    return None if starts is None else list(range(starts.size))


class AbsorbActivation(_OpThenQuantize):
    title = "Absorb{}IntoQuantize"

    def check(self, context, x, mid, out) -> MatchResult:
        q, node = out.producer(), mid.producer()
        params = read(q)
        if isinstance(params, str):
            return self.log.keep(q, params)
        if params.qtype not in INT_RANGES:
            return self.log.keep(q, f"{params.qtype.name} is not an integer quantized type")
        bounds = _clip_bounds(node)
        if isinstance(bounds, str):
            return self.log.keep(q, bounds)
        if self.op_type == "Clip" and (_float_type(node) != ir.DataType.FLOAT
                                       or params.scale.dtype != np.float32):
            return self.log.keep(q, "Clip bounds are checked for float32 only")
        reason = _saturates(params, *bounds)
        if reason:
            return self.log.keep(q, f"keeps {describe(node)}: {reason}")
        return self.log.accept(q)

    def rewrite(self, op, x, mid, out):
        q = out.producer()
        self.log.maybe_unused.extend(mid.producer().inputs[1:])  # Clip's bounds
        return op.op("QuantizeLinear", x, *q.inputs[1:], _domain=q.domain, _name=q.name,
                     **dict(q.attributes))


def _clip_bounds(node: ir.Node) -> tuple[float, float] | str:
    if node.op_type == "Relu":
        return 0.0, np.inf
    if "min" in node.attributes or "max" in node.attributes:  # Clip before opset 11
        return (node.attributes.get_float("min", -np.inf),
                node.attributes.get_float("max", np.inf))
    bounds = []
    for index, default in ((1, -np.inf), (2, np.inf)):
        value = node.inputs[index] if len(node.inputs) > index else None
        array = default if value is None else constant_array(value)
        if array is None or np.size(array) != 1:
            return f"Clip {node.name!r} bounds are not constant scalars"
        bounds.append(float(np.asarray(array).reshape(())))
    return bounds[0], bounds[1]


def _float_type(node: ir.Node) -> ir.DataType | None:
    """The Clip's data type: its input's, else its bounds' (the same type T)."""
    typed = [v.dtype for v in node.inputs if v is not None and v.dtype is not None]
    return typed[0] if typed else None


def _saturates(params: QdqParams, lo: float, hi: float) -> str | None:
    """None when Q(lo) is qmin and Q(hi) is qmax in every channel (Q divides in float32)."""
    qmin, qmax = INT_RANGES[params.qtype]
    scale = params.scale.astype(np.float32)
    if not np.all(scale > 0):
        return "a scale is not positive"
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        low = np.rint(np.float32(lo) / scale)
        high = np.rint(np.float32(hi) / scale)
    if not np.all(low <= qmin - params.zero_point):
        return "the lower bound is inside the quantized range (zero point above qmin)"
    if not np.all(high >= qmax - params.zero_point):
        return "the upper bound is inside the quantized range"
    return None


def pair_rules(log: RuleLog) -> RewriteRuleSet:
    return RewriteRuleSet([RedundantPair.rule(log, "RemoveRedundantQdqPair")])


def move_rules(log: RuleLog, *, int8_moves: bool = False) -> RewriteRuleSet:
    return RewriteRuleSet([*(MoveThrough.rule(log, op, int8_moves) for op in MOVABLE_OPS),
                           ShapeOfQuantized.rule(log, "ShapeOfQuantized")])


def absorb_rules(log: RuleLog) -> RewriteRuleSet:
    return RewriteRuleSet([AbsorbActivation.rule(log, op) for op in ("Relu", "Clip")])
