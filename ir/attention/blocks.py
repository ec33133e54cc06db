"""The transformer blocks of an exported model: for each self-attention (:mod:`.match`),
the residual stream it reads, the Add that joins its output back onto the stream, and the
MLP half after it.

A pre-norm block (ViT, timm) is ``mid = x + proj(attn(LN1(x)))``, ``out = mid +
mlp(LN2(mid))``. Token merging goes at ``mid``: after the attention's residual Add, before
the second norm. Only pre-norm blocks whose pieces are proven are returned; every other
attention is listed with the reason. The tokens ahead of the patches (CLS, distillation)
are counted from the first block's stream: ``Concat([Expand(token), patches], axis=1)``,
before or after the position embedding is added.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.ir.analysis import is_constant
from onnxpress.ir.attention.match import NORMS, Attention, find_attention, find_core_attention
from onnxpress.ir.attention.values import const, dims
from onnxpress.ir.edit import MS_DOMAIN

_THROUGH = frozenset({"MatMul", "Gemm", "Add", "Mul", "Div", "Identity", "Dropout", "Gelu",
                      "Erf", "Relu", "Sigmoid", "Tanh", "Sqrt", "Pow", "Sub"})
#: layout ops an attention output may pass through on its way back to [B, N, C]
_MOVES = frozenset({"Transpose", "Reshape"})


@dataclasses.dataclass
class TransformerBlock:
    attention: Attention
    stream: ir.Value  # x: the residual stream the block reads, [B, N, C]
    residual: ir.Node  # mid = Add(x, attention branch)
    mid: ir.Value
    mlp_residual: ir.Node  # out = Add(mid, MLP branch)
    out: ir.Value

    @property
    def keys(self) -> ir.Value:
        """k^T as the score MatMul reads it, ``[B, H, d, N]`` (heads first, tokens last)."""
        value = self.attention.product.inputs[1]
        assert value is not None
        return value


def transformer_blocks(graph: ir.Graph, softmax_axis_default: int = -1, *, core: bool = False
                       ) -> tuple[list[TransformerBlock], list[str]]:
    """Proven pre-norm blocks in graph order, and why each other attention is not one.
    ``core``: an attention whose projections cannot be traced may still be read by its
    core (:func:`find_core_attention`), for rewrites that need no projection weights."""
    blocks, notes = [], []
    for softmax in [n for n in graph if n.op_type == "Softmax" and n.domain == ""]:
        found = find_attention(softmax, softmax_axis_default)
        if isinstance(found, str) and core:
            loose = find_core_attention(softmax, softmax_axis_default)
            found = loose if not isinstance(loose, str) else found
        block = found if isinstance(found, str) else _block(found)
        if isinstance(block, str):
            notes.append(f"Softmax {softmax.name!r}: {block}")
        else:
            blocks.append(block)
    return blocks, notes


def leading_tokens(block: TransformerBlock) -> int | None:
    """How many learned tokens (CLS, distillation) precede the patches in ``block``'s
    stream, when it is the model's first: the constant-made inputs at the front of the
    token Concat; None when the stream is not built that way."""
    value = block.stream
    for _ in range(4):
        node = value.producer()
        if node is None:
            return None
        if node.op_type == "Concat":
            rank = len(dims(node.outputs[0]) or ())
            if node.attributes.get_int("axis", 0) % max(rank, 1) != 1:
                return None
            count = 0
            for part in node.inputs:
                shape = dims(part)
                source = _learned(part)
                if source is None or source.ndim != 3:
                    break
                # the Expand's own shape may be symbolic (TorchScript); the token's is not
                count += shape[1] if shape and isinstance(shape[1], int) else source.shape[1]
            return count
        if node.op_type != "Add":
            return None
        value = node.inputs[0] if not is_constant(node.inputs[0]) else node.inputs[1]
    return None


def _learned(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` when it is one, or an Expand / Tile / Identity of one
    (a token broadcast over the batch)."""
    while value is not None and const(value) is None:
        node = value.producer()
        if node is None or node.op_type not in ("Expand", "Tile", "Identity"):
            return None
        value = node.inputs[0]
    return const(value)


def _block(attention: Attention) -> TransformerBlock | str:
    norm = attention.x.producer()
    if norm is None or norm.op_type not in NORMS:
        return "its input is not a LayerNorm's output (only pre-norm blocks are handled)"
    stream = norm.inputs[0]
    output = (attention.tail[-1] if attention.tail else attention.weighted).outputs[0]
    residual = _join(output, stream)
    if residual is None:
        return "its output does not reach an Add with the stream the block's LayerNorm reads"
    mid = residual.outputs[0]
    readers = [u.node for u in mid.uses()]
    norms = [n for n in readers if n.op_type in NORMS]
    adds = [n for n in readers if n.op_type == "Add"]
    if len(norms) != 1 or len(adds) != 1 or len(readers) != 2 or mid.is_graph_output():
        return "the stream after attention does not feed just one LayerNorm and one Add"
    second = adds[0]
    branch = second.inputs[1] if second.inputs[0] is mid else second.inputs[0]
    if branch is None or not _reaches(branch, norms[0].outputs[0]):
        return "the Add after the second LayerNorm does not add that LayerNorm's MLP"
    return TransformerBlock(attention, stream, residual, mid, second, second.outputs[0])


def _reaches(value: ir.Value, source: ir.Value, limit: int = 64) -> bool:
    """Whether ``value`` is computed from ``source`` through branch ops only (the MLP's
    MatMuls, bias Adds, a GELU in any spelling), every path leading back to it or to
    constants."""
    stack, seen = [value], set()
    while stack:
        current = stack.pop()
        if current is source or is_constant(current) or id(current) in seen:
            continue
        seen.add(id(current))
        node = current.producer()
        if node is None or node.op_type not in _THROUGH or len(seen) > limit:
            return False
        stack.extend(v for v in node.inputs if v is not None)
    return True


def _join(value: ir.Value, stream: ir.Value) -> ir.Node | None:
    """Following ``value``'s single reader through the branch's ops: the Add that adds it
    to ``stream``."""
    for _ in range(32):
        users = list(value.uses())
        if len(users) != 1 or value.is_graph_output():
            return None
        node = users[0].node
        if node.op_type == "Add" and stream in node.inputs and value in node.inputs:
            return node
        if node.op_type not in _THROUGH | _MOVES or node.domain not in ("", MS_DOMAIN):
            return None
        value = node.outputs[0]
    return None
