"""Self-attention written out in ops, found from its Softmax:
``Reshape(Transpose(Softmax(scale * q k^T [+ mask]) v))`` where q, k and v are heads of
projections of one input (:mod:`.heads` replays whatever split and transposes the exporter
wrote), the scale is the product of scalar Mul/Div on the q, k or score path, and the
optional additive term either a Hugging Face mask (:mod:`.mask`) or a bias shared by
the heads, such as token merging's log(size). What fusion (``fuse-for-ort``)
and token merging build on."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import is_constant
from onnxpress.ir.attention import heads as _heads
from onnxpress.ir.attention import reshape as _reshape
from onnxpress.ir.attention.mask import MaskSource, trace_mask
from onnxpress.ir.attention.values import dims, scalar


@dataclasses.dataclass
class Attention:
    softmax: ir.Node
    product: ir.Node  # q @ k^T
    weighted: ir.Node  # probabilities @ v
    x: ir.Value  # what q, k and v project
    heads: list[_heads.HeadPath]  # q, k^T, v
    scale: float
    mask: MaskSource | None
    score_nodes: list[ir.Node]  # the scalings and the mask Add between product and softmax
    tail: list[ir.Node]  # Transposes .. the Reshape back to [B, S, H * d]
    bias: ir.Value | None = None  # an additive bias shared by the heads, [B | 1, 1, 1 | S, S]


def find_attention(softmax: ir.Node, axis_default: int) -> Attention | str:
    """The self-attention whose weights ``softmax`` computes, or why it is not one."""
    core = _core(softmax, axis_default)
    if isinstance(core, str):
        return core
    product, factor, mask_value, score_nodes, weighted = core
    heads = [
        _heads.trace_head(value, layout)
        for value, layout in ((product.inputs[0], _heads.QV_LAYOUT),
                              (product.inputs[1], _heads.K_T_LAYOUT),
                              (weighted.inputs[1], _heads.QV_LAYOUT))
    ]
    for role, head in zip("qkv", heads):
        if isinstance(head, str):
            return f"{role}: {head}"
    q, k, v = heads  # type: ignore[misc]
    x = q.projection.x
    if any(h.projection.x is not x for h in (k, v)) or len({(h.heads, h.head_size)
                                                            for h in heads}) != 1:
        return "q, k and v do not project one input into equal heads"
    tail = _output(weighted, x, heads)
    if isinstance(tail, str):
        return tail
    mask = bias = None
    if mask_value is not None:
        mask = trace_mask(mask_value, dims(x))
        if isinstance(mask, str):
            if not _shared_bias(mask_value, dims(x)):
                return mask
            mask, bias = None, mask_value
    scale = factor * q.factor * k.factor
    if v.factor != 1.0 or not np.isfinite(scale) or scale == 0.0:
        return "v is scaled, or the total scale is 0 or not finite"
    return Attention(softmax, product, weighted, x, list(heads), scale, mask, score_nodes, tail,
                     bias)


def _shared_bias(value: ir.Value, x_dims: tuple | None) -> bool:
    """A ``[B | 1, 1, 1 | S, S]`` additive term, the same for every head (token merging's
    log(size)), with a static token count S."""
    shape, tokens = dims(value), (x_dims or (None, None))[1]
    return (isinstance(tokens, int) and shape is not None and len(shape) == 4
            and shape[1] == 1 and shape[2] in (1, tokens) and shape[3] == tokens)


def _core(softmax: ir.Node, axis_default: int) -> tuple | str:
    """(q @ k^T, its scale, the mask value or None, the score nodes, probabilities @ v)."""
    if softmax.attributes.get_int("axis", axis_default) not in (-1, 3):
        return "Softmax is not over the last axis"
    scores = _scores(softmax.inputs[0])
    if isinstance(scores, str):
        return scores
    users = list(softmax.outputs[0].uses())
    if len(users) != 1 or users[0].node.op_type != "MatMul" or users[0].idx != 0:
        return "the attention weights feed something other than one MatMul with v"
    return (*scores, users[0].node)


def _scores(value: ir.Value) -> tuple | str:
    """Softmax's input as ``MatMul(q, kT) * factor [+ mask]``."""
    node = value.producer()
    mask_value, nodes = None, []
    if node is not None and node.op_type == "Add":
        sides = [_unscaled(v) for v in node.inputs]
        if all(isinstance(s, str) for s in sides):
            return "the attention scores are not a MatMul plus a mask"
        side = 0 if not isinstance(sides[0], str) else 1
        mask_value, nodes = node.inputs[1 - side], [node]
        found = sides[side]
    else:
        found = _unscaled(value)
    if isinstance(found, str):
        return found
    product, factor, scale_nodes = found
    return product, factor, mask_value, nodes + scale_nodes


def _unscaled(value: ir.Value | None) -> tuple | str:
    factor, nodes = 1.0, []
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in ("Mul", "Div") and node.domain == "":
        rank = len(dims(node.outputs[0]) or ())
        number = scalar(node.inputs[1], rank)
        inner = node.inputs[0]
        if number is None and node.op_type == "Mul":
            number, inner = scalar(node.inputs[0], rank), node.inputs[1]
        if number is None or number == 0:
            return "the attention scores are scaled by a non-constant"
        factor *= number if node.op_type == "Mul" else 1.0 / number
        nodes.append(node)
        node = inner.producer()
    if node is None or node.op_type != "MatMul" or node.domain != "":
        return "the Softmax input is not q @ k^T"
    return node, factor, nodes


def _output(weighted: ir.Node, x: ir.Value, heads) -> list[ir.Node] | str:
    """The Transposes (and Identities) and the Reshape after ``probs @ v``, proved to
    produce [B, S, H * d] in Attention's head-major layout."""
    labels = list(_heads.QV_LAYOUT)
    nodes: list[ir.Node] = []
    value = weighted.outputs[0]
    while True:
        users = [u for u in value.uses() if u.node.op_type != "Shape"]
        if len(users) != 1 or value.is_graph_output():
            return "the attention output has more than one user before its Reshape"
        node = users[0].node
        nodes.append(node)
        if node.op_type == "Reshape" and users[0].idx == 0:
            break
        if node.op_type == "Transpose":
            perm = node.attributes.get_ints("perm", [])
            if sorted(perm) != [0, 1, 2, 3]:
                return "a Transpose of the attention output has a bad perm"
            labels = [labels[p] for p in perm]
        elif node.op_type != "Identity":
            return f"the attention output passes through {node.op_type}"
        value = node.outputs[0]
    if labels != ["batch", "sequence", "head", "channel"]:
        return "the attention output is not transposed to [B, S, H, d]"
    lead = (node.inputs[0], x, *(h.projection.output for h in heads))
    # probs @ v is [B, H, S, d] by the heads' tracing, whatever shape inference says
    trailing = (heads[0].heads, heads[0].head_size)
    entries = _reshape.layout(node, dims(x), lead, trailing)
    width = heads[0].heads * heads[0].head_size
    if isinstance(entries, str) or list(entries) != ["batch", "sequence", width]:
        return "the attention output's Reshape does not merge the heads into [B, S, H * d]"
    return nodes




NORMS = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"})


def find_core_attention(softmax: ir.Node, axis_default: int) -> Attention | str:
    """A looser reading than :func:`find_attention`, for rewrites that need only the
    attention's core, not its projection weights (token merging): ``Softmax(scale * q
    k^T)`` with ``[B, H, N, N]`` weights feeding one MatMul with v, where q, k and v each
    trace back through single-input ops (reshapes, transposes, picks of a packed qkv, in
    any layout, e.g. ``nn.MultiheadAttention``'s sequence-first one) to one LayerNorm's
    output. ``heads`` is empty, ``scale`` NaN, ``tail`` empty."""
    core = _core(softmax, axis_default)
    if isinstance(core, str):
        return core
    product, _, mask_value, score_nodes, weighted = core
    if mask_value is not None:
        return "the attention scores carry a mask"
    if len(dims(softmax.outputs[0]) or ()) != 4 or len(dims(product.inputs[1]) or ()) != 4:
        return "the attention weights or keys are not [B, H, N, N] and [B, H, d, N]"
    sources = {_normalised(v) for v in (product.inputs[0], product.inputs[1],
                                        weighted.inputs[1])}
    if len(sources) != 1 or None in sources:
        return "q, k and v do not all come from one LayerNorm's output"
    (x,) = sources
    return Attention(softmax, product, weighted, x, [], float("nan"), None, score_nodes, [])


def _normalised(value: ir.Value | None, limit: int = 24) -> ir.Value | None:
    """The LayerNorm output ``value`` is computed from through ops with one non-constant
    input each (a projection's MatMul and bias, reshapes, transposes, picks, scalings)."""
    for _ in range(limit):
        node = value.producer() if value is not None else None
        if node is None:
            return None
        if node.op_type in NORMS:
            return value
        moving = [v for v in node.inputs if v is not None and not is_constant(v)]
        if len(moving) != 1:
            return None
        value = moving[0]
    return None
