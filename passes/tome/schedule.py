"""How many tokens each block merges, and what that saves.

Schedules follow ToMe's ``parse_r``: ``constant`` merges ``r`` in every block;
``decreasing`` goes linearly from ``2r`` in the first block to 0 in the last, ``increasing``
from 0 to ``2r``: the same total, earlier or later. Each block's count is capped at half
its unprotected tokens.

The cost model counts every MatMul, Gemm and Conv of the unmerged graph (:mod:`ir.flops`)
and splits each block's share into the part before the merge point (attention: its
projections scale with the tokens, the two token-by-token products with their square) and
after it (the MLP, on the merged tokens); what lies outside the blocks is fixed. It lets
``keep`` find the smallest ``r`` whose estimate meets a target.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from onnxpress.ir.analysis import is_constant
from onnxpress.ir.attention.blocks import TransformerBlock
from onnxpress.ir.flops import node_macs

SHAPES = {"constant": 0.0, "decreasing": -1.0, "increasing": 1.0}


def per_block(r: int, blocks: int, shape: str) -> list[int]:
    """ToMe's ``parse_r``: ``r`` per block bent by the inflection of ``shape``."""
    inflect = SHAPES[shape]
    low = int(r * (1.0 - inflect))
    high = 2 * r - low
    step = (high - low) / max(blocks - 1, 1)
    return [int(low + step * i) for i in range(blocks)]


def tokens(full: int, protected: int, rs: list[int]) -> list[tuple[int, int, int]]:
    """Per block (tokens in attention, tokens merged or dropped, tokens in the MLP), each
    count capped at half the unprotected tokens."""
    out, n = [], full
    for r in rs:
        step = min(r, max((n - protected) // 2, 0))
        out.append((n, step, n - step))
        n -= step
    return out


@dataclasses.dataclass
class Cost:
    full: int
    fixed: int  # outside the blocks
    linear: list[int]  # per block, before the merge point, scaling with the tokens
    square: list[int]  # per block, the token-by-token products
    mlp: list[int]  # per block, after the merge point

    @property
    def total(self) -> int:
        return self.fixed + sum(self.linear) + sum(self.square) + sum(self.mlp)

    def blocks(self, counts: list[tuple[int, int, int]]) -> list[float]:
        """Each block's multiply-accumulates at the given token counts."""
        f = self.full
        return [lin * a / f + sq * (a / f) ** 2 + mlp * m / f for (a, _, m), lin, sq, mlp
                in zip(counts, self.linear, self.square, self.mlp)]

    def kept(self, counts: list[tuple[int, int, int]]) -> float:
        return (self.fixed + sum(self.blocks(counts))) / self.total


def cost(graph: ir.Graph, blocks: list[TransformerBlock], full: int) -> Cost | None:
    """The cost model of the unmerged graph; None when a product's shape is unknown."""
    starts = {blocks[0].stream.producer(): 0}
    starts.update({b.mlp_residual: i + 1 for i, b in enumerate(blocks[:-1])})
    mids = {b.residual: i for i, b in enumerate(blocks)}
    ends = {b.mlp_residual for b in blocks[-1:]}
    result = Cost(full, 0, [0] * len(blocks), [0] * len(blocks), [0] * len(blocks))
    block, after_mid = None, False
    for node in graph:
        macs = node_macs(node)
        if macs is None:
            return None
        if block is None:
            result.fixed += macs
        elif after_mid:
            result.mlp[block] += macs
        elif node.op_type == "MatMul" and not any(is_constant(v) for v in node.inputs[:2]):
            result.square[block] += macs
        else:
            result.linear[block] += macs
        if node in starts:
            block, after_mid = starts[node], False
        elif node in mids:
            after_mid = True
        elif node in ends:
            block = None
    return result
