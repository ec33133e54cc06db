"""``tome``: token merging (ToMe) inserted into the transformer blocks of an exported ViT.

Blocks come from :func:`onnxpress.ir.attention.blocks.transformer_blocks`; each merges
``r`` tokens (at most half of its unprotected ones) between its attention residual and its
MLP (:mod:`.merge`), and every later block adds ``log(size)`` to its attention logits
(proportional attention) so that a merged token counts as the tokens it stands for. The
leading learned tokens (CLS, distillation) are protected: detected from the first block's
token Concat, or given as ``protected``. The token count must be static (the exporters
bake it into the head Reshapes, which are rewritten block by block). ``r=0`` changes
nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.attention.blocks import TransformerBlock, leading_tokens, transformer_blocks
from onnxpress.ir.builder import Builder
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.tome.merge import Merger

__all__ = ["Tome"]


@dataclasses.dataclass(frozen=True)
class Tome(Pass):
    name = "tome"

    r: int = 0  # tokens merged in every block
    protected: int = -1  # leading tokens that never merge; -1: detected (CLS, distillation)
    proportional: bool = True  # add log(size) to later blocks' attention logits

    def __post_init__(self) -> None:
        if self.r < 0:
            raise BadInputError(f"tome(r={self.r}): give the tokens merged per block, >= 0")

    def call(self, model: ir.Model) -> PassStats:
        blocks, notes = transformer_blocks(model.graph)
        if not blocks:
            raise BadInputError(
                "tome: the model has no pre-norm transformer block (LayerNorm -> self-attention "
                "-> residual Add -> LayerNorm -> MLP -> Add) to merge tokens in"
                + (f"; {notes[0]}" if notes else ""))
        full = blocks[0].mid.shape[1] if blocks[0].mid.shape is not None else None
        if not isinstance(full, int):
            raise BadInputError("tome: the token count is not static; export with a fixed "
                                "image size")
        opset = model.opset_imports.get("", 0)
        if self.r and opset < 16:
            raise BadInputError(f"tome: the model imports opset {opset}; merging needs 16 "
                                "(ScatterElements with add), e.g. compile with --opset 17")
        protected = leading_tokens(blocks[0]) if self.protected < 0 else self.protected
        if protected is None:
            notes.append("no CLS token found ahead of the patches; none protected")
            protected = 0
        tokens, size, bias, per_block = full, None, None, []
        for index, block in enumerate(blocks):
            if tokens != full:
                _retarget(model.graph, block, full, tokens)
                if bias is not None and self.proportional:
                    _proportional(model.graph, block, bias)
            r = min(self.r, max((tokens - protected) // 2, 0))
            per_block.append(tokens)
            if r:
                size, bias = _merge(model.graph, block, tokens, r, protected, size, opset,
                                    index)
                tokens -= r
        if tokens != full:
            _refresh_shapes(model)
        stats = {"blocks": len(blocks), "protected": protected, "tokens_in": per_block,
                 "tokens_out": tokens, "r": self.r}
        return PassStats(model, modified=tokens != full, stats=stats, notes=notes)


def _merge(graph: ir.Graph, block: TransformerBlock, tokens: int, r: int, protected: int,
           size: ir.Value | None, opset: int, index: int) -> tuple[ir.Value, ir.Value]:
    """Insert the merge after ``block``'s attention residual: the merged sizes ``[B, N - r,
    1]`` and their logarithm as an attention-logits bias ``[B, 1, 1, N - r]``."""
    builder = Builder(graph)
    merger = Merger(builder, opset, f"tome{index}")
    plan = merger.plan(block.keys, tokens, r, protected)
    mid = block.mid
    if size is None:
        batch = builder.op("Shape", [mid], {"start": 0, "end": 1})
        target = builder.op("Concat", [batch, builder.initializer(
            np.array([tokens, 1], np.int64), f"tome{index}_ones_shape")], {"axis": 0})
        ones = builder.initializer(np.ones((1, tokens, 1), np.float32), f"tome{index}_ones")
        size = builder.op("Expand", [ones, target])
    # x * size and size travel together: one set of gathers and one scatter, not two
    both = merger.merge(builder.op("Concat", [builder.op("Mul", [mid, size]), size],
                                   {"axis": -1}), plan)
    width = mid.shape[2] if mid.shape is not None and len(mid.shape) == 3 else None
    if isinstance(width, int):
        total, merged_size = builder.op_multi("Split", [both, builder.initializer(
            np.array([width, 1], np.int64), f"tome{index}_split")], {"axis": -1},
            num_outputs=2)
    else:
        ends = [builder.initializer(np.array([v], np.int64), f"tome{index}_{name}")
                for v, name in ((0, "zero"), (-1, "minus1"), (2**62, "end"))]
        total = builder.op("Slice", [both, ends[0], ends[1], ends[1]])
        merged_size = builder.op("Slice", [both, ends[1], ends[2], ends[1]])
    merged = builder.op("Div", [total, merged_size])
    bias = builder.op("Reshape", [builder.op("Log", [merged_size]), builder.initializer(
        np.array([-1, 1, 1, tokens - r], np.int64), f"tome{index}_bias_shape")])
    created = set(builder.nodes)
    builder.insert_after(block.residual)
    for use in list(mid.uses()):
        if use.node not in created:
            use.node.replace_input_with(use.idx, merged)
    return merged_size, bias


def _proportional(graph: ir.Graph, block: TransformerBlock, bias: ir.Value) -> None:
    """Softmax(logits + log(size) over the keys)."""
    builder = Builder(graph)
    softmax = block.attention.softmax
    shifted = builder.op("Add", [softmax.inputs[0], bias])
    builder.insert_before(softmax)
    softmax.replace_input_with(0, shifted)


def _retarget(graph: ir.Graph, block: TransformerBlock, full: int, tokens: int) -> None:
    """The block's head-split and head-merge Reshapes: ``full`` tokens become ``tokens``."""
    attention = block.attention
    reshapes = {n for head in attention.heads for n in head.nodes if n.op_type == "Reshape"}
    reshapes |= {n for n in attention.tail if n.op_type == "Reshape"}
    for node in reshapes:
        target = constant_array(node.inputs[1])
        if target is None or full not in target.tolist():
            continue
        array = np.where(target == full, tokens, target).astype(np.int64)
        node.replace_input_with(1, Builder(graph).initializer(array, f"{node.name}_tokens"))


def _refresh_shapes(model: ir.Model) -> None:
    """Token counts changed downstream of the first merge: forget the intermediate shapes
    and infer them again."""
    from onnxpress.passes.cleanup.shape_ops import TensorShapeInference

    outputs = set(model.graph.outputs)
    for node in model.graph:
        for value in node.outputs:
            if value not in outputs:
                value.shape = None
    TensorShapeInference()(model)
