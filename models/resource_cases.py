"""Tiny models that ask for huge values (issue 22, R1 and R2): each a few hundred bytes,
each with one node whose result would take from 800 MB to 16 GiB. onnxpress must compile
them without computing that node: fold-constants leaves it to the runtime, and shape
inference does not spell a huge value out through data propagation. The resource tests
and the ``resource_cases`` benchmark build them from here; ``chain`` is the benchmark's
long-graph case (compile time that grows with the node count, not faster).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: hand-built models are written at the IR version every supported ONNX Runtime reads
_IR_VERSION = 10


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    op: str  # the node that must stay in the graph
    elements: int  # what its result holds
    build: Callable[[], onnx.ModelProto]
    propagates: bool = False  # a data-propagating op reads the huge 1-D value (R2)


def _model(nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray], output: str,
           dtype: int, shape: list[int]) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(array, name) for name, array in constants.items()]
    graph = helper.make_graph(nodes, "resource_case", [],
                              [helper.make_tensor_value_info(output, dtype, shape)],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=_IR_VERSION)


def expand(shape: list[int]) -> onnx.ModelProto:
    """``Expand(ones[1], shape)``, float32."""
    return _model([helper.make_node("Expand", ["one", "shape"], ["y"], name="expand")],
                  {"one": np.ones([1], np.float32), "shape": np.array(shape, np.int64)},
                  "y", TensorProto.FLOAT, shape)


def tile(repeats: list[int]) -> onnx.ModelProto:
    """``Tile(ones[2, 2], repeats)``, float32."""
    return _model([helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile")],
                  {"x": np.ones([2, 2], np.float32), "repeats": np.array(repeats, np.int64)},
                  "y", TensorProto.FLOAT, [2 * r for r in repeats])


def constant_of_shape(shape: list[int]) -> onnx.ModelProto:
    return _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill")],
                  {"shape": np.array(shape, np.int64)}, "y", TensorProto.FLOAT, shape)


def range_float(limit: float) -> onnx.ModelProto:
    """``Mul(Range(0, limit, 1), 2)``, float32: Mul propagates data."""
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
             helper.make_node("Mul", ["r", "two"], ["y"], name="double")]
    constants = {"start": np.float32(0), "limit": np.float32(limit),
                 "delta": np.float32(1), "two": np.float32(2)}
    return _model(nodes, {k: np.asarray(v) for k, v in constants.items()}, "y",
                  TensorProto.FLOAT, [int(limit)])


def range_shape(limit: int) -> onnx.ModelProto:
    """``Shape(Add(Range(0, limit, 1), 1))``, int64: a shape computation that data
    propagation would spell out element by element."""
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
             helper.make_node("Add", ["r", "one"], ["s"], name="shift"),
             helper.make_node("Shape", ["s"], ["y"], name="shape")]
    constants = {"start": 0, "limit": limit, "delta": 1, "one": 1}
    return _model(nodes, {k: np.array(v, np.int64) for k, v in constants.items()}, "y",
                  TensorProto.INT64, [1])


CASES = (
    Case("expand_20000x20000", "Expand", 20000 * 20000, lambda: expand([20000, 20000])),
    Case("expand_16GiB", "Expand", 4 << 30, lambda: expand([4, 1 << 30])),
    Case("tile_20000x20000", "Tile", 20000 * 20000, lambda: tile([10000, 10000])),
    Case("range_float_2e8", "Range", 200_000_000, lambda: range_float(2e8), propagates=True),
    Case("range_int64_2e8_shape", "Range", 200_000_000, lambda: range_shape(200_000_000),
         propagates=True),
    Case("constant_of_shape_16GiB", "ConstantOfShape", 4 << 30,
         lambda: constant_of_shape([4, 1 << 30])),
)


def chain(length: int) -> onnx.ModelProto:
    """``length`` nodes alternating ``Add(x, c)`` and ``Relu`` on a [1, 8] float32 input:
    nothing to fold, so every pass walks the whole chain."""
    nodes, last = [], "x"
    for index in range(length):
        out = f"v{index}"
        nodes.append(helper.make_node("Add", [last, "c"], [out], name=f"n{index}") if index % 2
                     == 0 else helper.make_node("Relu", [last], [out], name=f"n{index}"))
        last = out
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(np.full([8], 0.5, np.float32), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=_IR_VERSION)
