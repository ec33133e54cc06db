"""Symbolic evaluation of small shape vectors, and the Reshape rule it enables.

An entry of a shape vector is an ``int`` or ``(value, axis)``: "dimension ``axis`` of
``value``", whatever it turns out to be at run time. Shape, Gather, Slice, Unsqueeze,
Squeeze, Concat and Cast are followed; anything else makes the vector unknown.

- ``Gather(Shape(x), i)`` (and Slice/Concat/Unsqueeze of it) -> a constant, when the dims
  it picks are static although others are not (bit-exact)
- ``Reshape(x, Concat(Slice(Shape(x), 0, k), c))`` -> ``Reshape(x, [0]*k + c)``
  (entries that copy x's own dimension at the same position become 0, one other unknown
  entry becomes -1; bit-exact)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from onnxpress.ir.analysis import constant_array

Entry = int | tuple[ir.Value, int]
_MAX_DEPTH = 12


def shape_vector(value: ir.Value | None, depth: int = 0) -> list[Entry] | None:
    """The entries of a 0-D or 1-D int64 value, or None when they cannot be followed."""
    if value is None or depth > _MAX_DEPTH:
        return None
    array = constant_array(value)
    if array is not None:
        return [int(v) for v in np.atleast_1d(array)] if array.ndim <= 1 else None
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    follow = _FOLLOW.get(node.op_type)
    return follow(node, depth + 1) if follow is not None else None


def _shape(node: ir.Node, depth: int) -> list[Entry] | None:
    source = node.inputs[0]
    if source is None or source.shape is None:
        return None
    rank = len(source.shape)
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", rank)
    axes = range(rank)[slice(start, end)]
    dims = source.shape.dims
    return [dims[a] if isinstance(dims[a], int) else (source, a) for a in axes]


def _gather(node: ir.Node, depth: int) -> list[Entry] | None:
    data = shape_vector(node.inputs[0], depth)
    index = constant_array(node.inputs[1])
    if data is None or index is None or index.ndim > 1 or node.attributes.get_int("axis", 0):
        return None
    try:
        return [data[int(i)] for i in np.atleast_1d(index)]
    except IndexError:
        return None


def _slice(node: ir.Node, depth: int) -> list[Entry] | None:
    data = shape_vector(node.inputs[0], depth)
    bounds = [constant_array(v) for v in node.inputs[1:]]
    if data is None or len(bounds) < 2 or any(b is None for b in bounds):
        return None
    starts, ends = int(bounds[0][0]), int(bounds[1][0])
    axes = int(bounds[2][0]) if len(bounds) > 2 else 0
    steps = int(bounds[3][0]) if len(bounds) > 3 else 1
    if len(bounds[0]) != 1 or axes != 0 or steps != 1:
        return None
    return data[starts:ends]


def _passthrough(node: ir.Node, depth: int) -> list[Entry] | None:
    return shape_vector(node.inputs[0], depth)


def _cast(node: ir.Node, depth: int) -> list[Entry] | None:
    if node.attributes.get_int("to") != ir.DataType.INT64:
        return None
    return shape_vector(node.inputs[0], depth)


def _concat(node: ir.Node, depth: int) -> list[Entry] | None:
    parts = [shape_vector(v, depth) for v in node.inputs]
    if any(p is None for p in parts):
        return None
    return [entry for part in parts for entry in part]  # type: ignore[union-attr]


_FOLLOW = {
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Unsqueeze": _passthrough,
    "Squeeze": _passthrough,
    "Identity": _passthrough,
    "Cast": _cast,
    "Concat": _concat,
}


def _same_dim(entry: tuple[ir.Value, int], x: ir.Value, position: int) -> bool:
    value, axis = entry
    if value is x:
        return axis == position
    if value.shape is None or x.shape is None or position >= len(x.shape):
        return False
    dim, mine = value.shape.dims[axis], x.shape.dims[position]
    return isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim == mine


def _constant_target(x: ir.Value, shape: ir.Value, node: ir.Node) -> list[int] | str:
    """The constant shape that does what ``shape`` does for ``x``, or why there is none."""
    if constant_array(shape) is not None:
        return "the shape is already constant"
    if node.attributes.get_int("allowzero", 0):
        return "allowzero=1: 0 would not mean 'copy'"
    entries = shape_vector(shape)
    if entries is None:
        return "the shape is not computed from shapes and constants"
    target: list[int | None] = []
    for position, entry in enumerate(entries):
        if isinstance(entry, int):
            target.append(entry)
        else:
            target.append(0 if _same_dim(entry, x, position) else None)
    if target.count(None) + target.count(-1) > 1:
        return "more than one dimension is unknown"
    return [-1 if t is None else t for t in target]


class ReshapeFromShapeOfInput(RewriteRuleClassBase):
    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _outputs=["out"])

    def check(self, context, x, shape, out) -> MatchResult:
        result = MatchResult()
        target = _constant_target(x, shape, out.producer())
        return result.fail(target) if isinstance(target, str) else result

    def rewrite(self, op, x, shape, out):
        target = _constant_target(x, shape, out.producer())
        assert not isinstance(target, str)
        return op.Reshape(x, op.Constant(value_ints=target))


_FOLDABLE = frozenset({"Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast"})


def fold_static_entries(graph: ir.Graph) -> int:
    """Replace shape computations whose every entry is static by initializers; return how
    many. (Constant folding cannot: their inputs, a Shape of a dynamic value, are not
    constant.)"""
    folded = 0
    for node in list(graph):
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            continue
        out = node.outputs[0]
        if out.dtype != ir.DataType.INT64 or all(constant_array(v) is not None
                                                  for v in node.inputs if v is not None):
            continue
        entries = shape_vector(out)
        if entries is None or not all(isinstance(e, int) for e in entries):
            continue
        scalar = (out.shape is not None and len(out.shape) == 0) or (
            node.op_type == "Gather" and constant_array(node.inputs[1]).ndim == 0)
        name = f"{out.name}_static"
        if name in graph.initializers or out.is_graph_output():
            continue
        array = np.array(entries[0] if scalar else entries, dtype=np.int64)
        value = ir.Value(name=name, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.INT64), const_value=ir.tensor(array))
        graph.register_initializer(value)
        out.replace_all_uses_with(value)
        folded += 1
    return folded


def rules() -> RewriteRuleSet:
    return RewriteRuleSet([ReshapeFromShapeOfInput.rule()])
