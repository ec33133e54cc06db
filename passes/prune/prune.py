"""``prune``: structured pruning that physically shrinks tensors, or weight sparsity.

``structure=channel`` removes a ``ratio`` of the channels of every Conv-produced dependency
group (:mod:`onnxpress.ir.channel_groups`: a residual stage's Adds, its Convs' output rows
and the next layers' input columns, BatchNorm parameters, depthwise filters, Concat
offsets, all cut together; a grouped Conv's groups each lose as many and a channel
shuffle's pieces the same positions, :func:`.channels.select`); ``structure=mlp`` does the
same for the groups a Gemm/MatMul produces, which in a transformer are the MLP's hidden
width (the residual stream reaches a LayerNorm and the attention heads a Reshape, so those
groups are blocked). Channels go by importance, lowest first: ``importance=magnitude`` is
the L2 norm of what writes the channel (its filters and biases in every producer of the
group). Groups the analysis cannot prove safe are left alone and each is named in the notes
with its reason. Each group keeps a multiple of ``multiple`` channels when it had one (ONNX
Runtime's blocked convolutions want multiples of 16: ResNet-50 at 30% runs 1.3x faster with
45 of 64 channels kept, 1.8x with 48). With calibration data, ``refit=true`` refits every
layer that read pruned channels by least squares (:mod:`.compensate`).
``allocate=adaptive`` spreads the same total unevenly, cheapest channels first across all
groups by relative refit error (each group losing at most twice ``ratio``): digits CNN at
30% 99.78% either way, MiniLM at 25% MLP Spearman 0.989 -> 0.981; uniform stays the
default.

``structure=head`` removes attention heads from ONNX Runtime's fused Attention (run
``fuse-for-ort`` first; :mod:`.heads`): ``heads=N`` of them across the model, lowest
importance first, each block keeping one (``activation``: each head's cost to the model's
output, by ablation on calibration batches). Digits ViT, 2 of 24 heads removed: 98.89% ->
97.78% by magnitude, 98.67% by activation.

``structure=unstructured|nm`` zeroes weights instead (:mod:`.sparsity`).

On a LLaMA decoder ``structure=mlp`` finds each SwiGLU's width (gate and up rows and the
down projection's columns, one group); with ``importance=activation`` the channels go by the
refit's own error estimate and the down projection is refitted, all from one streaming run
(float32 Grams, 280 MB for SmolLM2-135M's 30). Each refitted layer's estimated relative
output error is in ``stats["refit_error"]``, and a note names those above ``ERROR_WARNING``
(0.3): SmolLM2-135M at 5% of its linear weights (6.7% of MLP width) goes 42.09 -> 47.7
perplexity, so structured width is the costly way to compress it. Heads of an unfused
(exported) GQA attention are not pruned yet: only ORT's fused Attention.

Lossy: ``check`` or ``onnxpress compare`` measure the cost. Run ``cleanup`` first: folded
BatchNorms and constant weights are what the groups are read from.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.branches import layers_in_bodies
from onnxpress.ir.channel_groups import Group, channel_groups
from onnxpress.ir.edit import remove_unread
from onnxpress.ir.layers import LINEAR_OPS
from onnxpress.passes.base import Pass, PassStats, data_field
from onnxpress.passes.prune import heads as attention
from onnxpress.passes.prune.channels import magnitude, remove_channels, select
from onnxpress.passes.prune.compensate import consumers, gather, gather_paired, refit, saliency
from onnxpress.passes.prune.sparsity import error_notes, sparsify

__all__ = ["Prune"]

_KIND = {"channel": "conv", "mlp": "linear"}


@dataclasses.dataclass(frozen=True)
class Prune(Pass):
    name = "prune"
    renamed = {"budget": "allocate", "compensate": "refit"}

    structure: Literal["channel", "mlp", "head", "unstructured", "nm"] = "channel"
    ratio: float = 0.3  # fraction of each group's channels removed (channel, mlp; head: of
    # all heads, when heads=0)
    heads: int = 0  # structure=head: how many heads go, across the model
    sparsity: float = 0.5  # fraction of weights zeroed (unstructured)
    n: int = 2  # N:M: n weights kept in every m consecutive ones along the input axis
    m: int = 4
    importance: Literal["magnitude", "activation"] = "magnitude"
    multiple: int = 8  # channels kept per group: a multiple of this (ORT's NCHWc blocks)
    refit: bool = True  # refit the layers reading pruned channels (.compensate; data)
    sequential: bool = False  # refit layer after layer on the pruned model's own inputs
    allocate: Literal["uniform", "adaptive"] = "uniform"  # adaptive: spread by importance
    max_batches: int = 256  # calibration batches compensation and importance read
    exclude: tuple[str, ...] = ()  # producer node names whose groups stay whole
    data: Any = data_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.ratio) and 0 <= self.ratio < 1):
            raise BadInputError(f"prune(ratio={self.ratio}): give the fraction of channels "
                                "to remove, in [0, 1), e.g. 0.3")
        if self.multiple < 1:
            raise BadInputError(f"prune(multiple={self.multiple}): give 1 or more")

    def call(self, model: ir.Model) -> PassStats:
        if self.structure in ("unstructured", "nm"):
            stats, notes = sparsify(model, structure=self.structure, sparsity=self.sparsity,
                                    n=self.n, m=self.m, importance=self.importance,
                                    data=self.data, max_batches=self.max_batches,
                                    exclude=list(self.exclude), allocate=self.allocate)
            return PassStats(model, modified=bool(stats.get("weights_zeroed")), stats=stats,
                             notes=notes)
        if self.structure == "head":
            return self._heads(model)
        return self._structured(model)

    def _heads(self, model: ir.Model) -> PassStats:
        found, notes = attention.blocks(model.graph)
        if not found:
            raise BadInputError(
                "prune(structure=head): no com.microsoft.Attention with an output projection "
                "to prune; run fuse-for-ort first, e.g. --passes "
                "'cleanup,fuse-for-ort,prune(structure=head,heads=2)'"
                + (f" ({notes[0]})" if notes else ""))
        total = sum(b.heads for b in found)
        count = self.heads or int(self.ratio * total)
        if not 0 <= count <= total - len(found):
            raise BadInputError(f"prune(heads={count}): the model has {total} heads in "
                                f"{len(found)} blocks; each keeps one, so give at most "
                                f"{total - len(found)}")
        if self._wants_data(notes):
            attention.measure(model, found, self.data, self.max_batches)
        if self.importance == "activation" and self.data is not None:
            batches = list(itertools.islice(self.data, min(self.max_batches, 32)))
            per_block = attention.sensitivity(model, found, batches)
        else:
            per_block = [attention.magnitude(block) for block in found]
        ranked = sorted((score, b, h) for b, scores in enumerate(per_block)
                        for h, score in enumerate(scores))
        removed: list[list[int]] = [[] for _ in found]
        for _, b, h in ranked:
            if sum(map(len, removed)) == count:
                break
            if len(removed[b]) < found[b].heads - 1:
                removed[b].append(h)
        compensate = self.refit and self.data is not None
        for block, heads in zip(found, removed):
            if heads:
                attention.remove_heads(model.graph, block, np.array(sorted(heads)), compensate)
        remove_unread(list(model.graph.initializers.values()), producers=())
        stats = {"heads_removed": count, "heads": total, "blocks": len(found),
                 "per_block": [len(r) for r in removed]}
        return PassStats(model, modified=count > 0, stats=stats, notes=notes)

    def _wants_data(self, notes: list[str]) -> bool:
        """Whether importance or compensation will read calibration data (error or note
        when it is missing)."""
        if not (self.importance == "activation" or self.refit
                or self.allocate == "adaptive"):
            return False
        if self.data is None:
            if self.importance == "activation" or self.allocate == "adaptive":
                raise BadInputError(f"prune(importance={self.importance},allocate={self.allocate}) "
                                    "needs calibration data: give --calibration FILE.npz")
            notes.append("no calibration data: the layers after the pruned channels are not "
                         "refitted (give --calibration, or refit=false to silence this)")
            return False
        return True

    def _refit(self, model: ir.Model, plan: list[tuple[Group, Any]],
               measured: dict) -> dict[str, float]:
        """Refit every layer reading pruned channels: one-shot from the unpruned model's
        statistics, or (``sequential``) layer after layer in graph order, each on what it
        sees once the layers before it were pruned and refitted (the removed columns are
        zeros until the cut, so the model runs as the pruned one would)."""
        found = consumers(plan)[0]
        errors = {}
        if not self.sequential:
            for consumer in found:
                consumer.gram, consumer.count = (measured[consumer.node].gram,
                                                 measured[consumer.node].count)
                errors[consumer.node.name] = refit(model.graph, consumer)
            return errors
        order = {node: i for i, node in enumerate(model.graph)}
        original = model.clone()
        batches = list(itertools.islice(self.data, self.max_batches))
        for consumer in sorted(found, key=lambda c: order[c.node]):
            gather_paired(original, model, consumer, batches)
            refit(model.graph, consumer)
        return errors

    def _measure(self, model: ir.Model, groups: list[Group], notes: list[str]) -> dict:
        """The input statistics of every layer reading a candidate group's channels, in one
        calibration run, when importance or compensation wants them: node -> Consumer."""
        if not groups or not self._wants_data(notes):
            return {}
        found, skipped = consumers([(g, np.arange(g.size)) for g in groups])
        notes.extend(skipped)
        gather(model, found, self.data, self.max_batches)
        return {consumer.node: consumer for consumer in found}

    def _scores(self, group: Group, measured: dict, notes: list[str]) -> np.ndarray:
        if self.importance == "activation" or self.allocate == "adaptive":
            scores = saliency(group, measured, relative=self.allocate == "adaptive")
            if scores is not None:
                return scores
            notes.append(f"group of {group.name!r}: a reading layer was not measured; "
                         "ranked by magnitude")
        return magnitude(group)

    def _adaptive(self, scored: list[tuple[Group, np.ndarray]], total: int) -> list[int]:
        """Per group, how many channels go when the same total is spread by importance:
        the channels whose removal costs least (relative output error) across all groups,
        each group losing at most twice ``ratio`` (0.9 at most) of its channels; then
        rounded to ``multiple`` as a uniform ratio would be."""
        caps = [int(min(0.9, 2 * self.ratio) * g.size) for g, _ in scored]
        ranked = sorted((s, i) for i, (_, scores) in enumerate(scored) for s in scores)
        counts = [0] * len(scored)
        for _, i in ranked:
            if sum(counts) >= total:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
        return [self._count(g.size, count / g.size) for (g, _), count in zip(scored, counts)]

    def _count(self, size: int, ratio: float | None = None) -> int:
        """Channels to remove from a group of ``size``: ``ratio`` of them, rounded so that
        the kept count is a multiple of ``multiple`` (when the group is one already), at
        least one such block kept."""
        ratio = self.ratio if ratio is None else ratio
        keep = size - int(round(ratio * size, 6))
        if self.multiple > 1 and size % self.multiple == 0:
            keep = max(self.multiple, round(keep / self.multiple) * self.multiple)
        return size - max(keep, 1)

    def _structured(self, model: ir.Model) -> PassStats:
        kind = _KIND[self.structure]
        excluded = set(self.exclude)
        groups = [g for g in channel_groups(model.graph) if g.kind == kind]
        notes: list[str] = []
        candidates = []
        for group in groups:
            if group.blocked:
                notes.append(f"group of {group.name!r} ({group.size} channels) kept: "
                             f"{group.blocked[0]}")
            elif group.name in excluded:
                notes.append(f"group of {group.name!r} kept: excluded")
            else:
                candidates.append(group)
        measured = self._measure(model, candidates, notes)
        plan: list[tuple[Group, Any]] = []
        scored = [(group, self._scores(group, measured, notes)) for group in candidates]
        counts = [self._count(g.size) for g in candidates]
        if self.allocate == "adaptive" and scored:
            counts = self._adaptive(scored, sum(counts))
        plan = [(group, select(group, scores, count))
                for (group, scores), count in zip(scored, counts)]
        if not candidates:
            inside = layers_in_bodies(model, LINEAR_OPS)
            raise BadInputError(
                f"prune(structure={self.structure}): the main graph has no prunable "
                f"{'channel' if kind == 'conv' else 'Gemm/MatMul width'} groups"
                + (f" ({notes[0]})" if notes else "") + (
                    f"; {inside} sit inside If/Loop/Scan bodies, which prune does not visit"
                    if inside else "") + (
                    "; shapes are unknown here: run cleanup first (it infers them and folds "
                    f"BatchNorm), e.g. --passes 'cleanup,{self.spec()}'"
                    if any("unknown rank" in note for note in notes) else ""))
        errors = self._refit(model, plan, measured) if measured and self.refit else {}
        notes.extend(error_notes(errors, "refitted layers keep a relative output error on the "
                                 "calibration data"))
        constants = remove_channels(model.graph, plan)
        removed = sum(len(r) for _, r in plan)
        total = sum(g.size for g, _ in plan)
        stats = {"groups": len(plan), "groups_kept": len(groups) - len(plan),
                 "channels_removed": removed, "channels": total, "constants_cut": constants}
        if errors:
            stats["refit_error"] = {"mean": float(np.mean(list(errors.values()))),
                                    "max": max(errors.values()), "layers": errors}
        return PassStats(model, modified=removed > 0, stats=stats, notes=notes)

