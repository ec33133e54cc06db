"""``static-shapes``: fixes the model's symbolic input dimensions, then infers every shape
again, so that ``cleanup`` can fold the shape arithmetic and TensorRT (or any runtime that
plans memory ahead) gets a fully static graph.

A symbolic dimension takes, in this order: the value ``dims`` gives its name
(``static-shapes(dims='sequence=128')``), ``batch`` when it is an input's first axis, or
the size it has in the first sample of the data (``--calibration``). One still unknown
stays symbolic and is named in the notes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.edit import TensorShapeInference
from onnxpress.passes.base import Pass, PassStats, data_field


def _named(text: str) -> dict[str, int]:
    named = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition("=")
        if not value.strip().isdigit() or int(value) < 1:
            raise BadInputError(f"static-shapes(dims=...): {pair!r} is not name=size "
                                "(a positive integer), e.g. dims='sequence=128'")
        named[key.strip()] = int(value)
    return named


@dataclasses.dataclass(frozen=True)
class StaticShapes(Pass):
    name = "static-shapes"

    batch: int = 1  # every input's first axis, when symbolic
    dims: str = ""  # other symbolic dims by name: 'sequence=128,height=224'
    data: Any = data_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch < 1:
            raise BadInputError("static-shapes(batch=...) must be at least 1")
        _named(self.dims)

    def call(self, model: ir.Model) -> PassStats:
        named = _named(self.dims)
        sample = next(iter(self.data), {}) if self.data is not None else {}
        result = PassStats(model, modified=False, stats={"fixed": 0})
        for value in model.graph.inputs:
            if value.shape is None:
                result.notes.append(f"static-shapes: input {value.name!r} has no shape; "
                                    "left as it is")
                continue
            seen = sample.get(value.name)
            dims = []
            for axis, dim in enumerate(value.shape.dims):
                if isinstance(dim, int):
                    dims.append(dim)
                    continue
                size = named.get(str(dim.value)) if dim.value is not None else None
                if size is None and axis == 0:
                    size = self.batch
                if size is None and seen is not None and seen.ndim == len(value.shape):
                    size = int(seen.shape[axis])
                if size is None:
                    fix = (f"give dims='{dim.value}=N'" if dim.value is not None else
                           "it has no name: give a --calibration sample of this input")
                    result.notes.append(f"static-shapes: input {value.name!r} axis {axis} "
                                        f"({dim}) stays dynamic; {fix}")
                    dims.append(dim)
                else:
                    dims.append(size)
                    result.stats["fixed"] += 1
            value.shape = ir.Shape(dims)
        if result.stats["fixed"]:
            # intermediate shapes still hold the old symbols: infer them all again; a main
            # graph output inference cannot reach (behind silero-vad's If) keeps the shape
            # it had, since onnx.checker wants one there
            old = {v: v.shape for v in model.graph.outputs}
            for node in model.graph.all_nodes():
                for out in node.outputs:
                    out.shape = None
            result.notes += TensorShapeInference(self.name)(model).notes
            for value, shape in old.items():
                if value.shape is None:
                    value.shape = shape
            result.modified = True
        return result
