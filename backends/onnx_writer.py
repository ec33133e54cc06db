"""IR out: an ``onnx.ModelProto`` or a file, written atomically.

Large weights go to one external-data file beside the model (``<name>.data``): always above
protobuf's 2 GB limit, and by default above ``EXTERNAL_DATA_THRESHOLD`` so that the model
file stays small enough to read quickly.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import parameter_bytes

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_DATA_THRESHOLD = 1 << 30
#: tensors smaller than this stay inside the model file even when external data is used
SMALL_TENSOR_BYTES = 1024


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a ModelProto; external weights are read into it (mind the 2 GB limit)."""
    return ir.serde.serialize_model(model)


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    external_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path.

    Args:
        external_data: True forces, False forbids (error above 2 GB), None chooses by size.
        external_threshold: with ``external_data=None``, the total weight size in bytes
            above which weights go to ``<file name>.data``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise BadInputError(f"{path}: the folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise BadInputError(f"{path} is a folder; give a file name such as model.onnx")
    weights = parameter_bytes(model)
    if external_data is None:
        external_data = weights > external_threshold
    if not external_data and weights >= PROTOBUF_LIMIT:
        raise BadInputError(
            f"{path}: {weights / 2**30:.1f} GiB of weights exceed protobuf's 2 GB limit; "
            "save with external data"
        )
    data_name = path.name + ".data" if external_data else None
    if data_name is not None:
        _refuse_overwriting_sources(model, path.parent / data_name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # onnx_ir writes the external data file itself atomically; the model file, which
        # points at it, is renamed into place last so a reader never sees a half model.
        ir.save(
            model,
            tmp,
            format="protobuf",
            external_data=data_name,
            size_threshold_bytes=SMALL_TENSOR_BYTES,
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("saved %s (%d bytes of weights%s)", path, weights,
                ", external" if data_name else "")
    return path


def _refuse_overwriting_sources(model: ir.Model, data_path: Path) -> None:
    target = data_path.resolve()
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and Path(tensor.path).resolve() == target:
            raise BadInputError(
                f"{data_path} holds the weights this model is reading; save under another name"
            )
