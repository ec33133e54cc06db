"""``tome``: token merging (ToMe) inserted into the transformer blocks of an exported ViT.

Blocks come from :func:`onnxpress.ir.attention.blocks.transformer_blocks`; each merges its
share of tokens (:mod:`.schedule`: at most half of its unprotected ones) between its
attention residual and its MLP (:mod:`.merge`), and every later block adds ``log(size)``
to its attention logits (proportional attention) so that a merged token counts as the
tokens it stands for; a token-mean readout is weighed by size too (:mod:`.readout`).
``mode=prune`` instead drops the tokens the CLS token attends to least (training-free
token pruning, for comparison). The leading learned tokens (CLS, distillation) are
protected: detected from the first block's token Concat, or given as ``protected``. The
token count must be static (the exporters bake it into the head Reshapes, which are
rewritten block by block). ``r=0`` changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.attention.blocks import TransformerBlock, leading_tokens, transformer_blocks
from onnxpress.ir.builder import Builder
from onnxpress.ir.edit import TensorShapeInference
from onnxpress.ir.flops import macs_by_section
from onnxpress.ir.marks import keep_float
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.tome import schedule
from onnxpress.passes.tome.merge import WHY, Merger
from onnxpress.passes.tome.readout import weigh_mean

__all__ = ["Tome"]



@dataclasses.dataclass(frozen=True)
class Tome(Pass):
    name = "tome"

    r: int = 0  # tokens merged (or dropped) per block, before the schedule bends it
    schedule: Literal["constant", "decreasing", "increasing"] = "constant"  # 2r -> 0, 0 -> 2r
    keep: float = 0.0  # > 0: the smallest r whose blocks keep at most this share of MACs
    mode: Literal["merge", "prune"] = "merge"  # prune: drop the tokens CLS attends to least
    protected: int = -1  # leading tokens that never merge; -1: detected (CLS, distillation)
    proportional: bool = True  # add log(size) to later blocks' attention logits

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 0:
            raise BadInputError(f"tome(r={self.r}): give the tokens merged per block, >= 0")
        if not 0.0 <= self.keep < 1.0:
            raise BadInputError(f"tome(keep={self.keep}): give the share of multiply-"
                                "accumulates to keep, between 0 and 1 (0: use r)")
        if self.keep and self.r:
            raise BadInputError("tome: give r or keep, not both")

    def call(self, model: ir.Model) -> PassStats:
        graph = model.graph
        blocks, notes = transformer_blocks(graph, core=True)
        if not blocks:
            raise BadInputError(
                "tome: the model has no pre-norm transformer block (LayerNorm -> self-attention "
                "-> residual Add -> LayerNorm -> MLP -> Add) to merge tokens in"
                + (f"; {notes[0]}" if notes else ""))
        full = blocks[0].mid.shape[1] if blocks[0].mid.shape is not None else None
        if not isinstance(full, int):
            raise BadInputError("tome: the token count is not static; export with a fixed "
                                "image size")
        protected = leading_tokens(blocks[0]) if self.protected < 0 else self.protected
        if protected is None:
            notes.append("no CLS token found ahead of the patches; none protected")
            protected = 0
        if self.mode == "prune" and protected == 0:
            raise BadInputError("tome(mode=prune) ranks tokens by the CLS token's attention, "
                                "and this model has none; use mode=merge or give protected=1")
        costs = schedule.cost(graph, blocks, full)
        r = self._choose_r(costs, len(blocks), full, protected)
        counts = schedule.tokens(full, protected, schedule.per_block(r, len(blocks),
                                                                     self.schedule))
        opset = model.opset_imports.get("", 0)
        if any(step for _, step, _ in counts) and opset < 16:
            raise BadInputError(f"tome: the model imports opset {opset}; merging needs 16 "
                                "(ScatterND with add), e.g. compile with --opset 17")
        ends = [blocks[0].stream.producer()] + [n for b in blocks
                                                for n in (b.residual, b.mlp_residual)]
        before = macs_by_section(graph, ends) if costs is not None else None
        size = self._rewrite(graph, blocks, counts, protected, opset, full)
        if counts[-1][2] != full:
            notes += _refresh_shapes(model)
            if size is not None:
                note = weigh_mean(graph, blocks[-1].out, size, opset)
                notes += [note] if note else []
        stats = {"blocks": len(blocks), "protected": protected, "r": r, "mode": self.mode,
                 "schedule": self.schedule, "tokens_in": [a for a, _, _ in counts],
                 "tokens_out": counts[-1][2]}
        if before is not None and None not in before:
            after = macs_by_section(graph, ends)
            if None not in after:
                stats.update(_macs(before, after))
                notes.append(_summary(stats))
        return PassStats(model, modified=counts[-1][2] != full, stats=stats, notes=notes)

    def _choose_r(self, costs: schedule.Cost | None, blocks: int, full: int,
                  protected: int) -> int:
        if not self.keep:
            return self.r
        if costs is None:
            raise BadInputError("tome(keep=...): a MatMul's shape is unknown, so the cost "
                                "cannot be estimated; give r instead")
        kept = 1.0
        for r in range(1, full):
            counts = schedule.tokens(full, protected, schedule.per_block(r, blocks,
                                                                         self.schedule))
            kept = costs.kept(counts)
            if kept <= self.keep:
                return r
        raise BadInputError(f"tome(keep={self.keep}): even the most merging keeps "
                            f"{kept:.2f} of the multiply-accumulates")

    def _rewrite(self, graph: ir.Graph, blocks: list[TransformerBlock],
                 counts: list[tuple[int, int, int]], protected: int, opset: int, full: int
                 ) -> ir.Value | None:
        """Merge or drop block by block; the last sizes (None when nothing merged)."""
        size = bias = None
        rows: dict[int, ir.Value] = {}  # r -> the batch index [B, r, 1], shared by blocks
        for index, (block, (tokens, step, _)) in enumerate(zip(blocks, counts)):
            if tokens != full:
                _retarget(graph, block, full, tokens)
                if bias is not None and self.proportional:
                    _proportional(graph, block, bias)
            if not step:
                continue
            if self.mode == "prune":
                _drop(graph, block, tokens, step, protected, opset, index)
            else:
                size, bias = _merge(graph, block, tokens, step, protected, size, opset, index,
                                     rows)
        return size


def _macs(before: list[int], after: list[int]) -> dict[str, object]:
    """Multiply-accumulates at batch 1 (millions): the whole model, and each block's
    attention half (up to its residual Add) and MLP half, before and after."""
    def blocks(sections: list[int]) -> list[float]:
        inner = sections[1:-1]
        return [round((inner[i] + inner[i + 1]) / 1e6, 1) for i in range(0, len(inner), 2)]

    return {"macs_before_M": round(sum(before) / 1e6, 1),
            "macs_after_M": round(sum(after) / 1e6, 1),
            "macs_kept": round(sum(after) / sum(before), 4),
            "block_macs_before_M": blocks(before), "block_macs_after_M": blocks(after)}


def _summary(stats: dict[str, object]) -> str:
    tokens, before, after = stats["tokens_in"], stats["macs_before_M"], stats["macs_after_M"]
    unit, scale = ("G", 1e3) if before >= 1e3 else ("M", 1.0)
    return (f"tokens per block {' '.join(map(str, tokens))} -> {stats['tokens_out']}; "
            f"multiply-accumulates at batch 1 {before / scale:.2f} {unit} -> "
            f"{after / scale:.2f} {unit} ({stats['macs_kept']:.0%})")


def _replace_after(builder: Builder, block: TransformerBlock, new: ir.Value) -> None:
    """Place the built nodes after the attention residual; its readers read ``new``."""
    created = set(builder.nodes)
    builder.insert_after(block.residual)
    for use in list(block.mid.uses()):
        if use.node not in created:
            use.node.replace_input_with(use.idx, new)


def _drop(graph: ir.Graph, block: TransformerBlock, tokens: int, r: int, protected: int,
          opset: int, index: int) -> None:
    builder = Builder(graph)
    probabilities = block.attention.softmax.outputs[0]
    kept = Merger(builder, opset, f"tome{index}").drop(probabilities, block.mid, tokens, r,
                                                       protected)
    _replace_after(builder, block, kept)


def _merge(graph: ir.Graph, block: TransformerBlock, tokens: int, r: int, protected: int,
           size: ir.Value | None, opset: int, index: int, rows: dict[int, ir.Value]
           ) -> tuple[ir.Value, ir.Value]:
    """Insert the merge after ``block``'s attention residual: the merged sizes ``[B, N - r,
    1]`` and their logarithm as an attention-logits bias ``[B, 1, 1, N - r]``."""
    builder = Builder(graph)
    merger = Merger(builder, opset, f"tome{index}")
    metric = _projected_keys(builder, block, index)
    if metric is None:
        plan = merger.plan(merger.keys_metric(block.keys, tokens), tokens, r, protected,
                           tokens_last=True)
    else:
        plan = merger.plan(metric, tokens, r, protected, tokens_last=False)
    mid = block.mid
    if r not in rows:
        rows[r] = merger.batch_rows(mid, r)
    if size is None:  # every token is one patch until the first merge
        batch = builder.op("Shape", [mid], {"start": 0, "end": 1})
        target = builder.op("Concat", [batch, builder.initializer(
            np.array([tokens, 1], np.int64), f"tome{index}_ones_shape")], {"axis": 0})
        ones = builder.initializer(np.ones((1, tokens, 1), np.float32), f"tome{index}_ones")
        size = builder.op("Expand", [ones, target])
    merged, merged_size = merger.merge(mid, size, plan, rows[r])
    bias = builder.op("Reshape", [builder.op("Log", [merged_size]), builder.initializer(
        np.array([-1, 1, 1, tokens - r], np.int64), f"tome{index}_bias_shape")])
    _replace_after(builder, block, merged)
    return merged_size, bias


def _projected_keys(builder: Builder, block: TransformerBlock, index: int) -> ir.Value | None:
    """The keys summed over heads, ``[B, N, d]``, computed from the block's normed input
    with the key projection summed over heads: the attention's own head split is then
    read by nothing else, so ``fuse-for-ort`` can still fuse it. None when the projection
    is unknown (a core-only reading)."""
    if not block.attention.heads:
        return None
    key = block.attention.heads[1]
    projection, columns = key.projection, key.columns
    shape = (key.heads, key.head_size)
    weight = projection.weight[:, columns].reshape(-1, *shape).sum(axis=1)
    metric = builder.op("MatMul", [block.attention.x, builder.initializer(
        weight.astype(np.float32), f"tome{index}_key_weight")])
    keep_float(metric.producer(), WHY)
    if projection.bias is None:
        return metric
    bias = projection.bias[columns].reshape(shape).sum(axis=0).astype(np.float32)
    return builder.op("Add", [metric, builder.initializer(bias, f"tome{index}_key_bias")])


def _proportional(graph: ir.Graph, block: TransformerBlock, bias: ir.Value) -> None:
    """Softmax(logits + log(size) over the keys)."""
    builder = Builder(graph)
    softmax = block.attention.softmax
    shifted = builder.op("Add", [softmax.inputs[0], bias])
    builder.insert_before(softmax)
    softmax.replace_input_with(0, shifted)


def _retarget(graph: ir.Graph, block: TransformerBlock, full: int, tokens: int) -> None:
    """The Reshapes between the block's first norm and its attention residual (head split,
    head merge, an exporter's sequence-first moves): ``full`` tokens become ``tokens``."""
    stack, seen = [block.attention.x], set()
    while stack:
        for use in stack.pop().uses():
            node = use.node
            if node is block.residual or node in seen:
                continue
            seen.add(node)
            stack.extend(node.outputs)
            target = constant_array(node.inputs[1]) if node.op_type == "Reshape" else None
            if target is not None and full in target.tolist():
                array = np.where(target == full, tokens, target).astype(np.int64)
                node.replace_input_with(1, Builder(graph).initializer(array,
                                                                      f"{node.name}_tokens"))


def _refresh_shapes(model: ir.Model) -> list[str]:
    """Token counts changed downstream of the first merge: forget the intermediate shapes
    and infer them again; the inference's notes."""
    outputs = set(model.graph.outputs)
    for node in model.graph:
        for value in node.outputs:
            if value not in outputs:
                value.shape = None
    return TensorShapeInference("tome")(model).notes
