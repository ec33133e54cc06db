"""IR out: an ``onnx.ModelProto`` or a file, written atomically.

Large weights go to one external-data file beside the model (``<name>.data``): always above
protobuf's 2 GB limit, and by default above ``EXTERNAL_DATA_THRESHOLD`` so that the model
file stays small enough to read quickly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxpress.backends.files import replace_atomically, writable
from onnxpress.backends.sparse_initializers import to_sparse
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import graph_protos, parameter_bytes

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_DATA_THRESHOLD = 1 << 30
#: tensors smaller than this stay inside the model file even when external data is used
SMALL_TENSOR_BYTES = 1024


#: before IR version 4 every initializer also had to be a graph input
_FIRST_IR_WITHOUT_INITIALIZER_INPUTS = 4


def to_proto(model: ir.Model, *, inline_external: bool = True) -> onnx.ModelProto:
    """The model as a ModelProto. External weights are read into it (so the proto stands on
    its own) unless ``inline_external=False`` or they would pass protobuf's 2 GB limit, in
    which case the proto keeps pointing at the files."""
    with _valid_ir_version(model):
        proto = ir.serde.serialize_model(model)
    if inline_external and parameter_bytes(model) < PROTOBUF_LIMIT:
        _inline_external(proto, model)
    return proto


def _inline_external(proto: onnx.ModelProto, model: ir.Model) -> None:
    """Read external initializers into ``proto``, in every graph: a proto that kept a
    relative location would resolve it against whatever folder reads it (the working
    directory, for a session made from bytes), not the model's."""
    tensors = {name: value.const_value for graph in model.graphs()
               for name, value in graph.initializers.items()}
    for graph in graph_protos(proto.graph):
        for tensor_proto in graph.initializer:
            if tensor_proto.data_location != onnx.TensorProto.EXTERNAL:
                continue
            tensor_proto.raw_data = tensors[tensor_proto.name].tobytes()
            tensor_proto.ClearField("data_location")
            del tensor_proto.external_data[:]


@contextlib.contextmanager
def _valid_ir_version(model: ir.Model) -> Iterator[None]:
    """Passes may add initializers to an IR-3 model, which IR 3 forbids unless they are
    inputs; such a model is written as IR 4 (same semantics), leaving the IR model as it
    was."""
    original = model.ir_version
    inputs = set(model.graph.inputs)
    if original < _FIRST_IR_WITHOUT_INITIALIZER_INPUTS and any(
        v not in inputs for v in model.graph.initializers.values()
    ):
        model.ir_version = _FIRST_IR_WITHOUT_INITIALIZER_INPUTS
    try:
        yield
    finally:
        model.ir_version = original


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    external_threshold: int | None = None,
    sparse: bool = False,
    reading: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path (``backends.files``:
    never through a link, onto a FIFO or device, or over a file the job reads: ``reading``,
    and the external data the model itself reads).

    Args:
        external_data: True forces, False forbids (error above 2 GB), None chooses by size.
        external_threshold: with ``external_data=None``, the total weight size in bytes
            above which weights go to ``<file name>.data`` (None: ``EXTERNAL_DATA_THRESHOLD``).
        sparse: store float weights that are mostly zeros as sparse initializers where
            that is smaller (``sparse_initializers.to_sparse``; inline tensors only).
    """
    path = writable(path, reading=reading)
    weights = parameter_bytes(model)
    if external_data is None:
        limit = EXTERNAL_DATA_THRESHOLD if external_threshold is None else external_threshold
        external_data = weights > limit
    if not external_data and weights >= PROTOBUF_LIMIT:
        raise BadInputError(
            f"{path}: {weights / 2**30:.1f} GiB of weights exceed protobuf's 2 GB limit; "
            "save with external data"
        )
    data_path = path.with_name(path.name + ".data") if external_data else None
    if data_path is not None:
        _refuse_overwriting_sources(model, data_path)

    def write(tmp: Path, data_tmp: Path | None = None) -> None:
        # the weights go to the sidecar's temporary name, which the model then names by
        # its final one: files.replace_atomically renames the two as a pair
        proto = _file_proto(model, path.parent, data_tmp.name if data_tmp else None)
        if data_tmp is not None:
            _rename_location(proto, data_tmp.name, data_path.name)
        if sparse:
            to_sparse(proto)
        onnx.save(proto, tmp)

    replace_atomically(path, write, reading=reading, sidecar=data_path)
    logger.info("saved %s (%d bytes of weights%s)", path, weights,
                ", external" if external_data else "")
    return path


def _file_proto(model: ir.Model, folder: Path, data_name: str | None) -> onnx.ModelProto:
    """The proto to write into ``folder``: weights inline, or those above
    ``SMALL_TENSOR_BYTES`` in ``folder/data_name``. Inline means read in, also for weights
    the input kept in its own data file (a location relative to the input's folder would
    not resolve from ``folder``). Without onnx_ir's value_info copy of every initializer:
    the initializer carries its type and shape itself, and the copies only grow the file."""
    if data_name is None:
        proto = to_proto(model)
    else:
        values = [v for graph in model.graphs() for v in graph.initializers.values()]
        tensors = [v.const_value for v in values]
        try:
            with _valid_ir_version(model):
                unloaded = ir.external_data.unload_from_model(
                    model, folder, data_name, size_threshold_bytes=SMALL_TENSOR_BYTES)
                proto = ir.serde.serialize_model(unloaded)
        finally:  # unload_from_model points the values at the new file; point them back
            for value, tensor in zip(values, tensors, strict=True):
                value.const_value = tensor
    for graph in graph_protos(proto.graph):
        initializers = {t.name for t in graph.initializer}
        kept = [info for info in graph.value_info if info.name not in initializers]
        if len(kept) < len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(kept)
    return proto


def _rename_location(proto: onnx.ModelProto, old: str, new: str) -> None:
    for graph in graph_protos(proto.graph):
        for tensor in graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value == old:
                    entry.value = new


def _refuse_overwriting_sources(model: ir.Model, data_path: Path) -> None:
    target = data_path.resolve()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and Path(tensor.path).resolve() == target:
            raise BadInputError(
                f"{data_path} holds the weights this model is reading; save under another name"
            )
