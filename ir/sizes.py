"""How many elements a value would have, told before anything computes it.

A model of a few hundred bytes can ask for gigabytes: ``Expand(c, [20000, 20000])``,
``Tile``, ``Range(0, 2e8)``, ``ConstantOfShape([4, 1 << 30])``. Whatever would compute
such a value asks here first:

- ``result_elements``: what a node's result would hold, from its constant inputs' values
  and its inputs' known dims. fold-constants asks before it evaluates a node, the mask
  probe before it runs a subgraph. The generators (Range, ConstantOfShape, Expand, Tile)
  are worked out here, so that no evaluator and no declared shape is trusted for them
  (ONNX leaves a float16 Range's length unknown); every other op goes through ONNX's own
  shape rule for it, fed the small constant inputs as data (Pad, Resize, OneHot, a
  broadcasting Add, MatMul, ...).
- ``propagation_hazard``: whether ONNX shape inference with data propagation would
  spell out a huge value. ONNX writes each element of a rank-1 input that a
  data-propagating op (Add, Concat, Gather, ...) reads as one dim record, about 140 bytes
  each: ``Range(0, 2e8) -> Add`` took 5.5 GB and ended in ``std::bad_alloc``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import onnx
import onnx_ir as ir

from onnxpress.ir.analysis import all_graphs

__all__ = ["PROPAGATION_LIMIT", "propagation_hazard", "result_elements"]

#: longest rank-1 value data propagation may spell out (about 140 MB of dim records)
PROPAGATION_LIMIT = 1 << 20
#: constant inputs up to this size go to ONNX's shape rule as data: shapes, pads, scales,
#: repeats, depths are a handful of numbers, and a weight's shape is known without its data
_DATA_LIMIT = 64
#: a result with no finite size (a Range to infinity): more than any limit
_UNBOUNDED = 1 << 63


def result_elements(node: ir.Node, opset: int) -> int | None:
    """At least how many elements the largest output of ``node`` would have (a standard
    op at ``opset``), told without computing it; an unknown dim counts as 1. None when
    nothing tells."""
    if node.domain not in ("", "ai.onnx"):
        return None
    rule = _GENERATORS.get(node.op_type)
    count = rule(node) if rule is not None else None
    return count if count is not None else _by_shape_rule(node, opset)


def propagation_hazard(model: ir.Model, limit: int = PROPAGATION_LIMIT, *,
                       unknown: bool = False) -> tuple[ir.Node, ir.Value, int | None] | None:
    """The first node whose data propagation would spell out a rank-1 input of more than
    ``limit`` elements, with that input and its length; None when there is none. Reads
    the dims the values carry; with ``unknown``, an input plain shape inference might
    still pin to a long rank-1 value (no shape yet, or a symbolic length) counts too, with
    length None. (A length that only data propagation itself pins is not foreseen.)"""
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    for graph in all_graphs(model):
        for node in graph:
            if node.domain not in ("", "ai.onnx") or not _propagates(node.op_type, opset):
                continue
            for value in node.inputs:
                length = _length(value)
                if length is None and unknown or length is not None and length > limit:
                    return node, value, length
    return None


def _length(value: ir.Value | None) -> int | None:
    """A rank-1 value's static length; 0 for any other rank; None when not known."""
    if value is None:
        return 0
    shape = value.const_value.shape if value.const_value is not None else value.shape
    if shape is None:
        return None
    if len(shape) != 1:
        return 0
    return shape[0] if isinstance(shape[0], int) else None


@functools.cache
def _propagates(op_type: str, opset: int) -> bool:
    try:
        return onnx.defs.get_schema(op_type, opset, "").has_data_propagation_function
    except onnx.defs.SchemaError:
        return False


def _constant(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor of an initializer no caller overrides or of a Constant node (any form),
    its bytes unread."""
    if value is None or value.is_graph_input():
        return None
    try:
        return ir.convenience.get_const_tensor(value)
    except ValueError:  # a malformed Constant node
        return None


def _dims(value: ir.Value | None) -> list[int] | None:
    """The value's dims, an unknown one as 1; a constant's own shape wins."""
    tensor = _constant(value)
    shape = tensor.shape if tensor is not None else value.shape if value is not None else None
    return None if shape is None else [d if isinstance(d, int) else 1 for d in shape.dims]


def _numbers(node: ir.Node, index: int) -> list[int | float] | None:
    """Input ``index``'s constant value as a flat list of Python numbers."""
    tensor = _constant(node.inputs[index]) if index < len(node.inputs) else None
    return None if tensor is None else tensor.numpy().reshape(-1).tolist()


def _range(node: ir.Node) -> int | None:
    values = [_numbers(node, index) for index in range(3)]
    if any(v is None or len(v) != 1 for v in values):
        return None
    (start,), (limit,), (delta,) = values
    if delta == 0:
        return None
    count = (limit - start) / delta
    return max(math.ceil(count), 0) if math.isfinite(count) else _UNBOUNDED


def _constant_of_shape(node: ir.Node) -> int | None:
    shape = _numbers(node, 0)
    return None if shape is None or min(shape, default=0) < 0 else math.prod(shape)


def _expand(node: ir.Node) -> int | None:
    dims, shape = _dims(node.inputs[0]), _numbers(node, 1)
    if dims is None or shape is None:
        return None
    rank = max(len(dims), len(shape))
    dims, shape = [1] * (rank - len(dims)) + dims, [1] * (rank - len(shape)) + shape
    return math.prod(0 if 0 in (a, b) else max(a, b) for a, b in zip(dims, shape))


def _tile(node: ir.Node) -> int | None:
    dims, repeats = _dims(node.inputs[0]), _numbers(node, 1)
    if dims is None or repeats is None or len(dims) != len(repeats) or min(repeats,
                                                                           default=0) < 0:
        return None
    return math.prod(dims) * math.prod(repeats)


_GENERATORS: dict[str, Callable[[ir.Node], int | None]] = {
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Tile": _tile,
}


def _by_shape_rule(node: ir.Node, opset: int) -> int | None:
    """ONNX's shape rule for the op, given the inputs' types and small constants."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
        proto = ir.serde.serialize_node(node)
        types, data = {}, {}
        for name, value in zip(proto.input, node.inputs):
            if value is None:
                continue
            tensor = _constant(value)
            kind = value.type or (ir.TensorType(tensor.dtype) if tensor is not None else None)
            if kind is None:
                return None
            types[name] = ir.serde.serialize_type(kind)
            shape = tensor.shape if tensor is not None else value.shape
            if shape is not None:
                ir.serde.serialize_shape_into(types[name], shape)
            if tensor is not None and tensor.size <= _DATA_LIMIT:
                data[name] = ir.serde.serialize_tensor(tensor)
        outputs = onnx.shape_inference.infer_node_outputs(schema, proto, types, data)
    except Exception:  # an op ONNX has no rule for, or a node its rule refuses: cannot tell
        return None
    counts = [math.prod(d.dim_value if d.HasField("dim_value") else 1
                        for d in out.tensor_type.shape.dim)
              for out in outputs.values() if out.tensor_type.HasField("shape")]
    return max(counts, default=None)
