"""Reading exported graphs: constant contents, provable dimension equality, scalars. What
the attention analyses (and the fusion rules built on them) share."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir


def const(value: ir.Value | None) -> np.ndarray | None:
    """The value's content when it is constant: an initializer no caller can override, or
    a Constant node in any of its forms (``value``, ``value_ints``, ``value_float``...)."""
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    return tensor.numpy() if tensor is not None else None


def same_dim(a: int | ir.SymbolicDim | None, b: int | ir.SymbolicDim | None) -> bool:
    """True when two dimensions are provably equal: the same int, or the same named symbol
    (an exporter gives one name to one dynamic size; unnamed symbols prove nothing)."""
    if a is None or b is None:
        return False
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    return a.value is not None and a.value == b.value


def dims(value: ir.Value | None) -> tuple | None:
    """The value's dimensions (ints and symbols), or None when its rank is unknown."""
    if value is None or value.shape is None:
        return None
    return tuple(value.shape.dims)


def last_dim(value: ir.Value) -> int | ir.SymbolicDim | None:
    """The last dimension, from the value's shape or, for ``MatMul(a, W)`` outputs the
    exporter left unannotated, from W (or the tensor a Transpose made W from)."""
    shape = dims(value)
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    node = value.producer()
    if node is None or node.op_type != "MatMul" or node.domain != "":
        return shape[-1] if shape else None
    weight = node.inputs[1]
    weight_dims = dims(weight)
    if weight_dims and isinstance(weight_dims[-1], int):
        return weight_dims[-1]
    source = weight.producer() if weight is not None else None
    if source is not None and source.op_type == "Transpose" and dims(source.inputs[0]):
        perm = source.attributes.get_ints("perm")
        inner = dims(source.inputs[0])
        if perm is not None and len(perm) == len(inner):
            return inner[perm[-1]]
    return shape[-1] if shape else None


def same_dims(a: tuple | None, b: tuple | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(
        same_dim(x, y) for x, y in zip(a, b)
    )


def scalar(value: ir.Value | None, rank: int | None = None) -> float | None:
    """The value of a float32 constant with one element, else None. With ``rank`` (the rank
    of the other operand, when known) the constant must not broadcast it to a larger rank."""
    array = const(value)
    if array is None or array.size != 1 or array.dtype != np.float32:
        return None
    if array.ndim and (rank is None or array.ndim > rank):
        return None
    return float(array.reshape(()))


def close(actual: float, wanted: float, rel: float = 1e-6) -> bool:
    return math.isclose(actual, wanted, rel_tol=rel, abs_tol=0.0)
