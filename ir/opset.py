"""Converting a model's default-domain opset, with whichever converter supports its source.

onnxscript's version converter works on the IR but starts at opset 18; onnx's own works on
protos from opset 1 and adapts ops onnxscript's leaves behind (a ReduceMean whose ``axes``
must become an input at 18). A model below 18 goes to onnx's first, one from 18 to
onnxscript's first; the other is the fallback. The caller verifies the result
(``backends.opset_upgrade``): a converter that runs is not yet a converter that is right.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import onnx.version_converter
import onnx_ir as ir
from onnxscript import version_converter as onnxscript_converter

#: the lowest source opset onnxscript's converter accepts
ONNXSCRIPT_FROM = 18


def _with_onnx(model: ir.Model, target: int) -> ir.Model:
    proto = ir.serde.serialize_model(model)
    # IR 3 needs every initializer listed as an input, which loading undid: the converter
    # would find them undefined
    proto.ir_version = max(proto.ir_version, 4)
    return ir.serde.deserialize_model(onnx.version_converter.convert_version(proto, target))


def _with_onnxscript(model: ir.Model, target: int) -> ir.Model:
    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    onnxscript_converter.convert_version(copy, target_version=target, fallback=False)
    return copy


CONVERTERS: dict[str, Callable[[ir.Model, int], ir.Model]] = {
    "onnx": _with_onnx, "onnxscript": _with_onnxscript,
}


def converters_for(source: int) -> list[str]:
    """Converter names in the order to try them for a model at ``source``."""
    return ["onnx", "onnxscript"] if source < ONNXSCRIPT_FROM else ["onnxscript", "onnx"]


def adopt(model: ir.Model, converted: ir.Model) -> None:
    """Make ``model`` the converted one, in place (callers hold ``model``)."""
    model.graph = converted.graph
    model.ir_version = max(model.ir_version or 0, converted.ir_version or 0)
    model.functions.clear()
    model.functions.update(converted.functions)
