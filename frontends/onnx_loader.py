"""ONNX in: a path, bytes, an ``onnx.ModelProto`` or an IR model -> ``ir.Model``.

Weights stored as external data stay memory-mapped; nothing reads them until a pass asks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx_ir.passes.common import RemoveInitializersFromInputsPass

from onnxpress.backends.opset_upgrade import upgrade
from onnxpress.errors import BadInputError
from onnxpress.frontends.external_data import checked, confine, read_attributes
from onnxpress.frontends.tensor_checks import check_tensors
from onnxpress.ir.analysis import graph_protos
from onnxpress.ir.marks import LOAD_NOTES

logger = logging.getLogger(__name__)

ModelSource = str | os.PathLike | bytes | onnx.ModelProto | ir.Model


def load(
    source: ModelSource,
    *,
    opset: int | None = None,
    keep_initializer_inputs: bool = False,
) -> ir.Model:
    """Load a model into the IR.

    Args:
        source: a file path, the serialized bytes, a ModelProto, or an IR model (returned
            as is, apart from the options below).
        opset: convert the default domain to this opset (onnx's or onnxscript's version
            converter, verified on random inputs: ``backends.opset_upgrade``), so passes see
            one canonical form. None keeps the model's own opset.
        keep_initializer_inputs: old exporters list every initializer as a graph input too,
            which makes weights overridable and hides them from constant folding. By default
            such inputs become plain constants (the model's outputs do not change, since
            ONNX Runtime feeds them their initializer values); True keeps them as inputs.
    """
    model = source if isinstance(source, ir.Model) else _deserialize(source)
    notes: list[str] = model.meta.setdefault(LOAD_NOTES, [])
    if not keep_initializer_inputs:
        overridable = [v.name for v in model.graph.inputs if v.const_value is not None]
        if overridable:
            RemoveInitializersFromInputsPass()(model)
            notes.append(
                f"{len(overridable)} initializers listed as graph inputs are treated as "
                "constants (load with keep_initializer_inputs=True to keep them overridable)"
            )
    if opset is not None:
        notes.append(upgrade(model, opset))
    return model


def _deserialize(source: str | os.PathLike | bytes | onnx.ModelProto) -> ir.Model:
    if isinstance(source, onnx.ModelProto):
        if any(graph.sparse_initializer for graph in graph_protos(source.graph)):
            copy = onnx.ModelProto()
            copy.CopyFrom(source)  # the caller's proto stays as it was
            source = _densify(copy, "the given model")
        model = _to_ir(source, "the given model")
        confine(model, None, "the given model")
        check_tensors(model, "the given model")
        return model
    if isinstance(source, bytes):
        model = _to_ir(_densify(_parse(source, "the given bytes"), "the given bytes"),
                       "the given bytes")
        confine(model, None, "the given bytes")
        check_tensors(model, "the given bytes")
        return model
    if not isinstance(source, (str, os.PathLike)):
        raise BadInputError(
            f"cannot load a model from {type(source).__name__}: give a path, bytes, "
            "an onnx.ModelProto or an onnx_ir.Model"
        )
    path = Path(source)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file; check the model path")
    try:
        with open(path, "rb") as stream:
            proto = _parse(stream.read(), str(path))
    except OSError as error:  # unreadable: permissions, a vanished file
        raise BadInputError(f"{path}: cannot read the model ({error.strerror})") from None
    model = _to_ir(_densify(proto, str(path), str(path.parent)), str(path))
    confine(model, path.parent, str(path))
    check_tensors(model, str(path))
    read_attributes(model)
    return model


def _to_ir(proto: onnx.ModelProto, where: str) -> ir.Model:
    """The IR of ``proto``, or a one-line refusal naming what makes it no valid graph (a
    name two nodes define, ...), which onnx_ir reports below a generic wrapper."""
    try:
        return ir.serde.deserialize_model(proto)
    except Exception as error:  # noqa: BLE001 - SerdeError wrapping ValueError and others
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise BadInputError(f"{where}: not a valid ONNX graph: {cause}") from None


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as error:
        raise BadInputError(
            f"{where}: not a readable ONNX model ({error}); the file may be truncated or "
            "not ONNX"
        ) from None
    field = _undecodable_text(proto)
    if field:
        raise BadInputError(f"{where}: the text field {field} is not UTF-8; the file is "
                            "damaged")
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise BadInputError(
            f"{where}: parsed, but holds no ONNX graph (ir_version "
            f"{proto.ir_version}); is it an ONNX model file?"
        )
    return proto


def _undecodable_text(message, path: str = "model") -> str | None:
    """The first string field protobuf could not decode (it hands those over as bytes, and
    every consumer after it expects text), or None. Bytes fields (tensor data) are skipped
    unread."""
    for field in message.DESCRIPTOR.fields:
        if field.type == field.TYPE_BYTES:
            continue
        repeated = (field.is_repeated if hasattr(field, "is_repeated")  # protobuf >= 6
                    else field.label == field.LABEL_REPEATED)
        if field.type == field.TYPE_STRING:
            values = getattr(message, field.name) if repeated else [getattr(message, field.name)]
            if any(not isinstance(v, str) for v in values):
                return f"{path}.{field.name}"
        elif field.type == field.TYPE_MESSAGE:
            if repeated:
                children = getattr(message, field.name)
            elif message.HasField(field.name):
                children = [getattr(message, field.name)]
            else:
                continue
            for index, child in enumerate(children):
                found = _undecodable_text(child, f"{path}.{field.name}"
                                                 + (f"[{index}]" if repeated else ""))
                if found:
                    return found
    return None


def _densify(proto: onnx.ModelProto, where: str, base_dir: str = "") -> onnx.ModelProto:
    """``proto`` with its sparse initializers made dense ones (in place): onnx_ir does not
    read sparse_initializer (the nodes reading one would read an undefined value), and ONNX
    Runtime makes them dense at load too, so nothing is lost."""
    for graph in graph_protos(proto.graph):
        for sparse in graph.sparse_initializer:
            for part in (sparse.values, sparse.indices):
                if part.data_location == onnx.TensorProto.EXTERNAL:
                    location = {e.key: e.value for e in part.external_data}.get("location", "")
                    checked(location, Path(base_dir) if base_dir else None, where,
                            f"sparse initializer {sparse.values.name!r}")
            try:
                values = numpy_helper.to_array(sparse.values, base_dir).reshape(-1)
                indices = numpy_helper.to_array(sparse.indices, base_dir).astype(np.int64)
                shape = tuple(sparse.dims)
                if indices.ndim == 2:  # [NNZ, rank] coordinates
                    indices = np.ravel_multi_index(tuple(indices.T), shape)
                dense = np.zeros(int(np.prod(shape)), values.dtype)
                dense[indices] = values
            except (IndexError, ValueError, OSError) as error:
                raise BadInputError(f"{where}: sparse initializer {sparse.values.name!r} "
                                    f"cannot be read ({error})") from None
            graph.initializer.append(numpy_helper.from_array(dense.reshape(shape),
                                                             sparse.values.name))
        del graph.sparse_initializer[:]
    return proto
