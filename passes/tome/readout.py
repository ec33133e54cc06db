"""The classifier readout after token merging. A CLS readout (``Gather`` of token 0) needs
nothing: the CLS token never merges and stays first. A mean over the tokens must weigh
each merged token by the tokens it stands for: the ``ReduceMean`` over tokens reads
``x * size / mean(size)``, whose mean is ``sum(x * size) / sum(size)``, through the final
LayerNorm and a ``Slice`` that leaves the CLS token out, when the model has them."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.attention.match import NORMS
from onnxpress.ir.builder import Builder


def _axes(node: ir.Node) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        array = constant_array(node.inputs[1])
        return None if array is None else [int(a) for a in array.ravel()]
    attribute = node.attributes.get("axes")
    return None if attribute is None else list(attribute.as_ints())


def _only_reader(value: ir.Value) -> ir.Node | None:
    users = list(value.uses())
    return users[0].node if len(users) == 1 and not value.is_graph_output() else None


def weigh_mean(graph: ir.Graph, out: ir.Value, size: ir.Value, opset: int) -> str | None:
    """Rewrite the token mean that reads the last block's output ``out [B, N, C]`` to weigh
    by ``size [B, N, 1]``; what was done, or None when the readout is not a token mean."""
    node, slices = _only_reader(out), []
    while node is not None and (node.op_type in NORMS or node.op_type == "Slice"):
        if node.op_type == "Slice":
            axes = constant_array(node.inputs[3]) if len(node.inputs) > 3 else None
            if axes is None or axes.ravel().tolist() not in ([1], [-2]):
                return None  # a slice of channels, or one the sizes cannot follow
            slices.append(node)
        node = _only_reader(node.outputs[0])
    if node is None or node.op_type != "ReduceMean" or _axes(node) not in ([1], [-2]):
        return None
    builder, weights = Builder(graph), size
    for cut in slices:  # the same token slice, applied to the sizes
        weights = builder.op("Slice", [weights, *cut.inputs[1:]])
    # the ReduceMean node and its output stay, so graph outputs need no renaming
    if opset >= 18:
        axes = builder.initializer(np.array([1], np.int64), "tome_readout_axes")
        mean = builder.op("ReduceMean", [weights, axes], {"keepdims": 1})
    else:
        mean = builder.op("ReduceMean", [weights], {"axes": [1], "keepdims": 1})
    scale = builder.op("Div", [weights, mean])
    weighted = builder.op("Mul", [node.inputs[0], scale])
    builder.insert_before(node)
    node.replace_input_with(0, weighted)
    return f"the token mean {node.name!r} weighs each token by the tokens merged into it"
