"""Every stored tensor holds what its type and shape say, checked when a model is loaded:
a hostile or damaged file (an initializer with fewer bytes than its dims need, external
data that ends before the tensor does, no element type) is refused in one line naming the
tensor, instead of failing deep inside a pass as "internal error". Sizes are compared
without reading external data."""

from __future__ import annotations

import math
import os

import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.frontends.external_data import model_tensors


def check_tensors(model: ir.Model, where: str) -> None:
    for tensor, owner in model_tensors(model):
        problem = _problem(tensor)
        if problem:
            raise BadInputError(f"{where}: tensor {tensor.name!r} ({owner}) {problem}")


def _problem(tensor: ir.TensorProtocol) -> str | None:
    if tensor.dtype is None or tensor.dtype == ir.DataType.UNDEFINED:
        return "has no element type"
    dims = list(tensor.shape)
    if any(not isinstance(d, int) or d < 0 for d in dims):
        return f"has dims {dims}; a stored tensor's dims are whole numbers >= 0"
    if isinstance(tensor, ir.ExternalTensor):
        return _external_problem(tensor)
    try:
        array = tensor.numpy()
    except Exception as error:  # noqa: BLE001 - onnx_ir's and numpy's errors for bad data
        return f"holds data that does not fit its type {tensor.dtype.name} and dims {dims} " \
               f"({' '.join(str(error).split())})"
    if array.size != math.prod(dims):
        return f"holds {array.size} elements, its dims {dims} need {math.prod(dims)}"
    return None


def _external_problem(tensor: ir.ExternalTensor) -> str | None:
    if tensor.dtype == ir.DataType.STRING:
        return "keeps strings in external data, which ONNX does not define"
    need = tensor.nbytes
    if tensor.length is not None and tensor.length != need:
        return f"declares {tensor.length} bytes of external data; its type and dims need {need}"
    offset = tensor.offset or 0
    size = os.path.getsize(tensor.path)
    if offset + need > size:
        return f"reads bytes {offset}..{offset + need} of {os.fspath(tensor.location)!r}, " \
               f"which holds {size}"
    return None
