"""``DQ(Q(x)), DQ(W_int8) -> com.microsoft.Attention`` -> ``com.microsoft.QAttention``.

``quantize`` treats ONNX Runtime's fused Attention (what ``fuse-for-ort`` writes) like a
MatMul: its input gets a per-tensor ``QuantizeLinear -> DequantizeLinear`` pair and its packed
``[hidden, 3 * hidden]`` Q/K/V weight is stored as int8, one scale per column. No ONNX
Runtime fusion reads that form (it would dequantize the weight on every run), so this
lowering hands the integer tensors to QAttention, which runs the Q/K/V projection as one
uint8 x int8 GEMM and the attention itself in float.

Exactness: QAttention computes ``(x_q - zp_x) * (W_q - zp_w)`` in int32 and scales by
``s_x * s_w`` - the same products as the DQ -> Attention form up to float summation order,
so the outputs agree within float rounding, not bit for bit.

What is lowered: an Attention node of the com.microsoft domain whose input 0 is a per-tensor
uint8 DequantizeLinear and input 1 a DequantizeLinear of a constant int8 matrix, per tensor
or per column (axis 1), and which uses no input past ``mask_index`` (QAttention's CPU kernel
has no ``attention_bias`` or ``past_sequence_length``). Anything else stays and is named in
the notes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import constant_array
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import MS_DOMAIN, remove_unread, replace_node
from onnxpress.ir.qdq import is_op, read

__all__ = ["lower_attention"]

#: Attention's inputs QAttention also has (input, weights, bias, mask_index)
_KNOWN_INPUTS = 4
#: Attention attributes QAttention accepts
_ATTRIBUTES = ("num_heads", "unidirectional", "scale", "mask_filter_value",
               "do_rotary", "past_present_share_buffer")


def lower_attention(graph: ir.Graph) -> tuple[int, list[str]]:
    """Lower every Attention it can; the count and a note per Attention left alone."""
    count, notes = 0, []
    for node in list(graph):
        if node.op_type != "Attention" or node.domain != MS_DOMAIN:
            continue
        reason = _lower(graph, node)
        if reason is None:
            count += 1
        else:
            notes.append(f"Attention {node.name!r}: {reason}; left as DQ -> Attention")
    return count, notes


def _lower(graph: ir.Graph, node: ir.Node) -> str | None:
    inputs = list(node.inputs)
    if len(inputs) > _KNOWN_INPUTS and any(v is not None for v in inputs[_KNOWN_INPUTS:]):
        return "uses past, attention_bias or past_sequence_length, which QAttention lacks"
    if len(inputs) < 3 or inputs[2] is None:
        return "has no bias input"
    x_dq, w_dq = inputs[0].producer(), inputs[1].producer()
    if not (is_op(x_dq, "DequantizeLinear") and is_op(w_dq, "DequantizeLinear")):
        return "input or weight is not dequantized"
    x_params, w_params = read(x_dq), read(w_dq)
    for params in (x_params, w_params):
        if isinstance(params, str):
            return f"unreadable DequantizeLinear ({params})"
    assert not isinstance(x_params, str) and not isinstance(w_params, str)
    if not x_params.per_tensor or x_params.qtype != ir.DataType.UINT8:
        return "input is not per-tensor uint8"
    weight = constant_array(w_dq.inputs[0])
    if weight is None or weight.dtype != np.int8 or weight.ndim != 2:
        return "weight is not a constant int8 matrix"
    if w_params.block_size or w_params.axis not in (None, 1):
        return "weight is not quantized per tensor or per column"

    builder = Builder(graph)
    x_scale, x_zero = x_dq.inputs[1], x_dq.inputs[2]
    w_scale = builder.initializer(np.atleast_1d(w_params.scale).astype(np.float32),
                                  f"{node.name}_weight_scale")
    w_zero = builder.initializer(np.atleast_1d(w_params.zero_point).astype(np.int8),
                                 f"{node.name}_weight_zero_point")
    mask = inputs[3] if len(inputs) > 3 else None
    attributes = {name: attr.value for name, attr in node.attributes.items()
                  if name in _ATTRIBUTES}
    out = builder.op(
        "QAttention",
        [x_dq.inputs[0], w_dq.inputs[0], inputs[2], x_scale, w_scale, mask, x_zero, w_zero],
        attributes, domain=MS_DOMAIN, name=f"{node.name}_quantized",
    )
    builder.insert_before(node)
    replace_node(graph, node, out)
    remove_unread([x_dq.outputs[0], w_dq.outputs[0]], producers=("DequantizeLinear", "Constant"))
    return None
