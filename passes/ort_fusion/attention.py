"""Self-attention written out in ops -> ``com.microsoft.Attention``.

- ``Reshape(Transpose(Softmax(scale * (x Wq + bq)_h (x Wk + bk)_h^T [+ mask]) (x Wv + bv)_h))``
  -> ``Attention(x, [Wq | Wk | Wv], [bq | bk | bv], mask_index, num_heads=H, scale=scale)``

where ``(.)_h`` splits into H heads by Reshape + Transpose (+ Gather/Slice/Split + Squeeze
for a packed qkv projection, in whatever layout ``_heads`` can replay), the scale is the
product of scalar Mul/Div anywhere on the q, k or score path, and the optional mask is the
Hugging Face additive mask ``(1 - Cast(m[:, None, None, :])) * c`` of an integer
``[B, S]`` tensor m, passed as ORT's raw 2-D ``mask_index`` with ``mask_filter_value=c``
(other spellings of it, such as transformers 5's ``Where`` over a Gather of the flattened
mask, are recognised by evaluating them on probe masks: ``ir/attention/mask_probe.py``).

Within float rounding (the scale is applied once to q k^T instead of to q, and QKV runs as
one GEMM; ~1e-6 relative on ViT-S and MiniLM). The mask is exact for masks of 0s and 1s;
ORT treats every m > 0 as 1, where the original would compute ``(1 - m) * c`` (meaningless
for other values).

``mask_value`` (``FuseForOrt(mask_value=-50)``) replaces a more negative ``c``: exporters
write float32's minimum, and ORT's softmax then computes exp() into denormals, 15x slower
([1, 12, 128, 128]: 1.4 ms against 0.09 ms unmasked, 2 threads). At -50 a masked key's
weight is at most ``exp(-50 + d)`` of the row's largest, ``d`` the amount by which its score
exceeds every unmasked one: below float32 resolution unless ``d`` passes ~33 (MiniLM's
int8 embeddings came out bit-identical over 8 padded sentences). A sequence whose mask is
all zeros then differs: at float32's minimum every score becomes it and the attention is
uniform (as ORT computes it with that fill), at -50 the scores still rank the keys.

Not a local pattern (the unbinding of q, k, v takes many forms), so it is matched by hand
from each Softmax; every node it removes must feed only the block, and the weights must be
constant.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.attention import heads as _heads
from onnxpress.ir.attention.mask import MaskSource
from onnxpress.ir.attention.match import find_attention
from onnxpress.ir.attention.values import dims
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import MS_DOMAIN, describe
from onnxpress.passes.ort_fusion._common import Declines

__all__ = ["fuse_attention"]


@dataclasses.dataclass
class _Block:
    x: ir.Value
    heads: list[_heads.HeadPath]  # q, k, v
    scale: float
    mask: MaskSource | None
    bias: ir.Value | None  # attention_bias, [B | 1, 1, S, S] once expanded
    final: ir.Node  # the Reshape back to [B, S, D]
    nodes: set[ir.Node]  # everything the fused node replaces


def fuse_attention(graph: ir.Graph, declines: Declines, softmax_axis_default: int,
                   mask_value: float | None = None, biased: bool = True) -> int:
    """Fuse every attention block it can prove; the count. ``mask_value``: the additive
    value of masked keys when the exporter's is more negative (module docstring).
    ``biased``: also fuse blocks with a shared additive bias (``attention_bias``, which
    QAttention lacks: off where int8 lowering follows)."""
    count = 0
    casts: dict[ir.Value, ir.Value] = {}
    for softmax in [n for n in graph if n.op_type == "Softmax" and n.domain == ""]:
        block = _match(softmax, softmax_axis_default, biased)
        if isinstance(block, str):
            declines.record(softmax, block)
            continue
        _rewrite(graph, block, casts, mask_value)
        count += 1
    return count


def _match(softmax: ir.Node, axis_default: int, biased: bool) -> _Block | str:
    found = find_attention(softmax, axis_default)
    if isinstance(found, str):
        return found
    if found.bias is not None and not biased:
        return "the scores carry an additive bias (attention_bias, which QAttention lacks)"
    nodes = {found.softmax, found.product, found.weighted, *found.score_nodes, *found.tail}
    for head in found.heads:
        nodes.update(head.nodes, head.projection.nodes)
    block = _Block(found.x, found.heads, found.scale, found.mask, found.bias, found.tail[-1],
                   nodes)
    return _absorb_shape_readers(block) or _check_removable(block) or block


_SHAPE_OPS = {"Shape", "Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Cast"}
_MAX_SHAPE_READERS = 32


def _absorb_shape_readers(block: _Block) -> str | None:
    """``Shape`` of a tensor inside the block, and the shape arithmetic after it, go with
    the block when they feed nothing else (TorchScript builds Reshape targets so)."""
    final = block.final.outputs[0]
    stack = [
        use.node for node in block.nodes for out in node.outputs if out is not final
        for use in out.uses() if use.node not in block.nodes and use.node.op_type == "Shape"
    ]
    readers: set[ir.Node] = set()
    while stack:
        node = stack.pop()
        if node in readers or node in block.nodes:
            continue
        if node.op_type not in _SHAPE_OPS or len(readers) >= _MAX_SHAPE_READERS:
            return "a Shape of a tensor inside the attention block is used outside it"
        readers.add(node)
        for out in node.outputs:
            if out.is_graph_output():
                return "a Shape of a tensor inside the attention block is a graph output"
            stack.extend(use.node for use in out.uses())
    block.nodes |= readers
    return None


def _check_removable(block: _Block) -> str | None:
    final = block.final.outputs[0]
    for node in block.nodes:
        for out in node.outputs:
            if out is final:
                continue
            if out.is_graph_output() or any(u.node not in block.nodes for u in out.uses()):
                return f"{describe(node)} has a user outside the attention block"
    return None


def _rewrite(graph: ir.Graph, block: _Block, casts: dict[ir.Value, ir.Value],
             mask_value: float | None) -> None:
    q = block.heads[0]
    weight = np.concatenate([h.projection.weight[:, h.columns] for h in block.heads], axis=1)
    bias = np.concatenate([
        h.projection.bias[h.columns] if h.projection.bias is not None
        else np.zeros(h.columns.shape, np.float32)
        for h in block.heads
    ])
    builder = Builder(graph)
    prefix = block.final.name or "attention"
    inputs = [
        block.x,
        builder.initializer(weight.astype(np.float32), f"{prefix}_qkv_weight"),
        builder.initializer(bias.astype(np.float32), f"{prefix}_qkv_bias"),
    ]
    attributes = {"num_heads": q.heads, "scale": float(np.float32(block.scale))}
    if block.mask is not None:
        inputs.append(_mask_index(graph, block.mask.source, casts))
        fill = block.mask.fill
        attributes["mask_filter_value"] = fill if mask_value is None else max(fill, mask_value)
    if block.bias is not None:
        inputs += [None] * (5 - len(inputs)) + [_full_bias(builder, block, prefix)]
    out = builder.op("Attention", inputs, attributes, domain=MS_DOMAIN, name=f"{prefix}_attention")
    ir.convenience.replace_nodes_and_values(
        graph, block.final, list(block.nodes), list(builder.nodes), [block.final.outputs[0]], [out]
    )


def _full_bias(builder: Builder, block: _Block, prefix: str) -> ir.Value:
    """ORT wants attention_bias as [B | 1, 1, S, S]; a per-key bias is broadcast over the
    queries."""
    shape = dims(block.bias)
    tokens = dims(block.x)[1]
    if shape is not None and shape[2] == tokens:
        return block.bias
    target = builder.initializer(np.array([1, 1, tokens, tokens], np.int64),
                                 f"{prefix}_bias_shape")
    return builder.op("Expand", [block.bias, target])


def _mask_index(graph: ir.Graph, source: ir.Value, casts: dict[ir.Value, ir.Value]) -> ir.Value:
    """ORT wants an int32 mask_index: one Cast per mask source, right after it."""
    if source.dtype == ir.DataType.INT32:
        return source
    if source not in casts:
        cast = ir.node("Cast", [source], {"to": ir.DataType.INT32}, name=f"{source.name}_int32")
        cast.outputs[0].dtype, cast.outputs[0].shape = ir.DataType.INT32, source.shape
        producer = source.producer()
        if producer is None or producer.graph is not graph:  # an input, or an outer value
            graph.insert_before(next(iter(graph)), cast)
        else:
            graph.insert_after(producer, cast)
        casts[source] = cast.outputs[0]
    return casts[source]

