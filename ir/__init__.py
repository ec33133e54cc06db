"""The onnxpress IR: onnx_ir's classes plus our verifier, analyses and builder.

Passes import IR names from here, so there is one place that says which onnx_ir API the
project relies on.
"""

from __future__ import annotations

from onnx_ir import (
    Attr,
    AttributeType,
    DataType,
    ExternalTensor,
    Function,
    Graph,
    Model,
    Node,
    Shape,
    SymbolicDim,
    Tensor,
    TensorType,
    Value,
    from_proto,
    passes,
    serde,
    tensor,
    to_proto,
    traversal,
)
from onnx_ir.passes import InPlacePass, PassResult

from onnxpress.ir.analysis import (
    all_graphs,
    constant_array,
    count_nodes,
    count_parameters,
    dtype_of,
    is_constant,
    opset_version,
    parameter_bytes,
    static_shape,
    unknown_ops,
)
from onnxpress.ir.builder import Builder
from onnxpress.ir.graph_view import to_networkx
from onnxpress.ir.verify import VerificationError, verify

__all__ = [
    "Attr",
    "AttributeType",
    "Builder",
    "DataType",
    "ExternalTensor",
    "Function",
    "Graph",
    "InPlacePass",
    "Model",
    "Node",
    "PassResult",
    "Shape",
    "SymbolicDim",
    "Tensor",
    "TensorType",
    "Value",
    "VerificationError",
    "all_graphs",
    "constant_array",
    "count_nodes",
    "count_parameters",
    "dtype_of",
    "from_proto",
    "is_constant",
    "opset_version",
    "parameter_bytes",
    "passes",
    "serde",
    "static_shape",
    "tensor",
    "to_networkx",
    "to_proto",
    "traversal",
    "unknown_ops",
    "verify",
]
