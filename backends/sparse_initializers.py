"""Sparse initializers on save: a float weight that is mostly zeros is written as an ONNX
``SparseTensorProto`` when that takes fewer bytes than the dense tensor.

    graph.initializer[w] (dense)  ->  graph.sparse_initializer[w] (values [NNZ], indices [NNZ])

Exact: ONNX Runtime turns it back into the same dense tensor at load, bit for bit (zero is
tested on the bits, so a -0.0 stays a stored value). What the tools accept decided the
encoding (onnx 1.23, onnxruntime 1.31, measured on MatMul and Conv weights):

- ``onnx.checker.check_model`` accepts only INT64 indices ("Sparse tensor indices must have
  INT64 type" for int32/int16/int8), linearized ``[NNZ]`` or coordinates ``[NNZ, rank]``;
  ONNX Runtime reads int8 to int64 (not unsigned) in both layouts.
- ``full_check=True`` fails on any model where a sparse initializer feeds an ordinary op:
  ONNX shape inference types it ``sparse_tensor(float)``, which MatMul/Conv reject. Nothing
  in the encoding changes that.
- INT64 held in ``raw_data`` costs 8 bytes an index: at 50% sparsity 1.5x the dense float32
  bytes. Held in ``int64_data`` (protobuf packed varints) an index costs 1 byte below 2**7,
  2 below 2**14, 3 below 2**21, 4 below 2**28. Linearized indices are the shortest, so a
  float32 weight at 50% takes (4 + b) / 8 of its dense size: 0.75 up to 16,384 elements,
  0.875 up to 2M, 1.0 up to 268M (coordinates: 0.82 on a 256x64 weight). A float32 weight
  breaks even at 33% sparsity below 16,384 elements, 43% below 2M, 50% below 268M.

So the encoding is linearized INT64 indices in ``int64_data``; a tensor moves only when its
encoded message is smaller than its dense one. Only inline tensors of the main graph move
(with external data the large ones stay dense in the data file); float16 breaks even only at
50-60% sparsity (2 value bytes + 2-3 index bytes against 2).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["to_sparse"]

logger = logging.getLogger(__name__)

#: sparse_initializer exists from IR version 6 on
FIRST_SPARSE_IR_VERSION = 6
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
_VARINT_STEPS = [1 << (7 * i) for i in range(1, 10)]


def to_sparse(proto: onnx.ModelProto) -> int:
    """Move each float initializer of ``proto``'s main graph whose sparse encoding is smaller
    into ``graph.sparse_initializer`` (in place); return how many moved."""
    if proto.ir_version < FIRST_SPARSE_IR_VERSION:
        logger.info("IR version %d has no sparse initializers; kept dense", proto.ir_version)
        return 0
    graph = proto.graph
    inputs = {value.name for value in graph.input}  # overridable weights stay plain tensors
    kept: list[TensorProto] = []
    moved: list[onnx.SparseTensorProto] = []
    for tensor in graph.initializer:
        sparse = None if tensor.name in inputs else _encode(tensor)
        if sparse is None:
            kept.append(tensor)
        else:
            moved.append(sparse)
    if moved:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        graph.sparse_initializer.extend(moved)
        logger.info("%d initializers stored sparse", len(moved))
    return len(moved)


def _encode(tensor: TensorProto) -> onnx.SparseTensorProto | None:
    """The sparse form of ``tensor``, or None when it is not smaller (or not a float tensor
    held inline)."""
    if (tensor.data_type not in _FLOATS or tensor.data_location == TensorProto.EXTERNAL
            or not tensor.dims or tensor.HasField("segment")):
        return None
    array = numpy_helper.to_array(tensor)
    bits = np.ascontiguousarray(array).reshape(-1).view(f"u{array.itemsize}")
    nonzero = np.flatnonzero(bits)
    # a cheap bound before building anything: values plus varint index bytes
    if nonzero.size * array.itemsize + _varint_bytes(nonzero) >= array.nbytes:
        return None
    values = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=[nonzero.size],
                         raw_data=bits[nonzero].astype(bits.dtype.newbyteorder("<")).tobytes(),
                         doc_string=tensor.doc_string)
    indices = TensorProto(name=f"{tensor.name}_indices", data_type=TensorProto.INT64,
                          dims=[nonzero.size])
    indices.int64_data.extend(nonzero.tolist())
    sparse = onnx.SparseTensorProto(values=values, indices=indices, dims=tensor.dims)
    return sparse if sparse.ByteSize() < tensor.ByteSize() else None


def _varint_bytes(indices: np.ndarray) -> int:
    """Bytes the non-negative ``indices`` take as protobuf varints (7 bits a byte)."""
    return indices.size + sum(int(np.count_nonzero(indices >= step)) for step in _VARINT_STEPS)
