"""``lowrank``: truncated SVD of MatMul / Gemm / Conv weights, only where it makes the layer
smaller and cheaper; or a low-rank branch that makes up another pass's weight error.

Each eligible layer (:mod:`.sites`) is seen as ``W [outputs, features]`` and factored as
``B A`` (:mod:`.factor`, :mod:`.rewrite`): a k x k Conv becomes a k x k Conv to ``r``
channels and a 1 x 1 Conv, a MatMul/Gemm two thinner ones. Rank ``r`` comes from one rule
(:mod:`.ranks`): ``ratio`` of the full rank, a fixed ``rank``, the ``energy`` kept, a
relative ``error`` per layer, or ``params``: the fraction of the eligible layers' parameters
kept overall, spread by each layer's measured effect on the model's outputs
(``allocate=sensitivity``, :mod:`.sensitivity`) or by the singular-value tails alone
(``tail``, and whenever there is no data). A layer whose rank would not save
``min_saving`` of its parameters (and so of its multiply-adds) stays dense, and the notes
say so. ``aware`` (default: when calibration data is given) whitens by the input's second
moments first, so truncation minimises output error on that data rather than weight error;
``sequential`` (default with data) then factors layer after layer, each fitted to what it
sees once the layers before it are factored (:mod:`.sequential`).

``compensate='PIPELINE'`` (EoRA-style) instead runs that pipeline (say
``weight-only(bits=4)``) on the model, then gives every layer it changed a parallel
``rank``-``r`` branch ``x -> x A^T B^T`` fitted to the weight error ``W - W_q``, in the
eigenspace of the layer's calibration inputs when ``aware`` (:mod:`.eora`).

Lossy (exact at full rank, up to float32 rounding); ``check`` or ``compare`` measure it.
Only the main graph is rewritten.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from onnxpress.errors import BadInputError
from onnxpress.ir.branches import layers_in_bodies
from onnxpress.ir.edit import remove_unread
from onnxpress.passes.activations import stream
from onnxpress.passes.base import Pass, PassStats, data_field, passes_field
from onnxpress.passes.lowrank import eora, ranks, rewrite, sites
from onnxpress.passes.lowrank.factor import DAMP, Spectrum, decompose
from onnxpress.passes.lowrank.sensitivity import measure
from onnxpress.passes.lowrank.sequential import factor_in_order

__all__ = ["LowRank"]

RULES = ("ratio", "rank", "energy", "error", "params")
OPS = ("MatMul", "Gemm", "Conv")


@dataclasses.dataclass(frozen=True)
class LowRank(Pass):
    name = "lowrank"

    ratio: float = 0.0  # rank = ratio x full rank (the default rule: 0.5 when none is set)
    rank: int = 0  # a fixed rank; with compensate, the branch's rank (default 32)
    energy: float = 0.0  # the smallest rank keeping this fraction of sum(s^2)
    error: float = 0.0  # the smallest rank with relative error at most this
    params: float = 0.0  # keep this fraction of the eligible layers' parameters, overall
    aware: bool | None = None  # whiten by calibration activations (default: with data)
    layers: Literal["all", "mlp"] = "all"  # mlp: transformer MLPs only
    ops: tuple[Literal["MatMul", "Gemm", "Conv"], ...] = OPS
    min_saving: float = 0.1  # a factored layer holds at most 1 - this of its parameters
    # (negative: it may grow, e.g. -1 allows full rank everywhere)
    min_elements: int = 4096  # smaller weights stay dense
    damp: float = DAMP
    allocate: Literal["sensitivity", "tail"] = "sensitivity"  # params: measured (data) | tail
    # refit each layer to its inputs once earlier ones are factored (.sequential; with
    # data): one calibration run per distinct layer input, about twice the time; digits ViT
    # logits error 0.061 -> 0.047, MiniLM at params=0.75 Spearman 0.979 -> 0.982
    sequential: bool = True
    compensate: str = ""  # a pipeline whose weight error a low-rank branch makes up
    compensate_passes: tuple[Pass, ...] = passes_field("compensate")  # built by the manager
    exclude: tuple[str, ...] = ()  # node names left alone
    max_batches: int = 256
    data: Any = data_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        chosen = [r for r in RULES if getattr(self, r)]
        if len(chosen) > 1 and not (self.compensate and chosen == ["rank"]):
            raise BadInputError(f"lowrank: give one of {', '.join(RULES)}, not "
                                f"{' and '.join(chosen)}")
        for rule in ("ratio", "energy", "params"):
            value = getattr(self, rule)
            if not 0 <= value <= 1:
                raise BadInputError(f"lowrank({rule}={value}): give a fraction in (0, 1]")
        if self.error < 0 or self.rank < 0:
            raise BadInputError("lowrank: error and rank cannot be negative")
        if not -1 <= self.min_saving < 1:
            raise BadInputError(f"lowrank(min_saving={self.min_saving}): give a fraction "
                                "in [0, 1) (down to -1 lets a layer grow, to test exactness)")
        if self.compensate and chosen not in ([], ["rank"]):
            raise BadInputError("lowrank(compensate=...): the branch's size is rank=R; "
                                f"drop {', '.join(c for c in chosen if c != 'rank')}")

    def call(self, model: ir.Model) -> PassStats:
        aware = self.data is not None if self.aware is None else self.aware
        if aware and self.data is None:
            raise BadInputError("lowrank(aware=true) needs calibration data: give "
                                "--calibration FILE.npz, or aware=false")
        found, notes = sites.find(model.graph, set(self.ops), set(self.exclude),
                                  self.layers == "mlp", self.min_elements)
        if not found:
            inside = layers_in_bodies(model, set(self.ops))
            raise BadInputError(
                "lowrank: the main graph has no MatMul/Gemm/Conv with a constant float weight "
                "to factor" + (f" ({notes[0]})" if notes else "") + (
                    f"; {inside} sit inside If/Loop/Scan bodies, which lowrank does not visit"
                    if inside else ""))
        if aware:
            self._measure(model, found, notes)
        if self.compensate:
            if not self.compensate_passes:
                raise BadInputError("lowrank(compensate=...): run it through PassManager or "
                                    "onnxpress.compile, which build the pipeline's passes")
            stats = eora.compensate(model, found, self.compensate_passes, self.rank or 32,
                                    self.damp, notes)
            return PassStats(model, modified=bool(stats["branches"]), stats=stats,
                             notes=notes)
        weights = [s.node.inputs[1] for s in found]
        spectra = [decompose(s.matrix, s.statistics(), self.damp) for s in found]
        sensitivity = None
        if self.params and self.allocate == "sensitivity" and self.data is None:
            notes.append("no calibration data: the parameter budget is spread by singular-"
                         "value tails, not measured sensitivity")
        elif self.params and self.allocate == "sensitivity":
            sensitivity = measure(model, found, spectra,
                              list(itertools.islice(self.data, min(self.max_batches, 32))))
        chosen = self._ranks(found, spectra, sensitivity)
        planned, before, after = [], 0, 0
        for site, spectrum, rank in zip(found, spectra, chosen):
            outputs, features = site.shape
            before += outputs * features
            top = ranks.limit(outputs, features, self.min_saving)
            if rank is None or rank > top:
                notes.append(self._kept(site, rank, top, spectrum))
                after += outputs * features
            else:
                planned.append((site, spectrum, rank))
                after += rank * (outputs + features)
        if self.sequential and aware:
            batches = list(itertools.islice(self.data, self.max_batches))
            refitted = dict(factor_in_order(model, [(s, r) for s, _, r in planned], batches,
                                            self.damp))
            planned = [(s, refitted[s], r) for s, _, r in planned]
        else:
            for site, spectrum, rank in planned:
                rewrite.factor(model.graph, site.node, site.weight, *spectrum.factors(rank))
        layers = [{"layer": site.node.name, "rank": rank, "full": len(spectrum.values),
                   "error": float(np.sqrt(spectrum.energy[rank]))}
                  for site, spectrum, rank in planned]
        remove_unread(weights, producers=())
        stats = {"layers_factored": len(layers), "layers": len(found), "aware": aware,
                 "weights_before": before, "weights_after": after, "factored": layers}
        return PassStats(model, modified=bool(layers), stats=stats, notes=notes)

    def _measure(self, model: ir.Model, found: list[sites.Site], notes: list[str]) -> None:
        sinks: dict[str, list[sites.Site]] = {}
        for site in found:
            width = site.shape[1]
            if width > sites.MAX_FEATURES:
                notes.append(f"{site.label}: {width} input features; factored without "
                             "activation statistics")
                continue
            sinks.setdefault(site.node.inputs[0].name, []).append(site)
        stream(model, sinks, self.data, max_batches=self.max_batches)

    def _ranks(self, found: list[sites.Site], spectra: list[Spectrum],
               weights: np.ndarray | None = None) -> list[int | None]:
        if self.params:
            scale = np.ones(len(spectra)) if weights is None else weights
            tails = [s.energy * w for s, w in zip(spectra, scale)]
            return ranks.by_budget(tails, [s.shape for s in found],
                                   [ranks.limit(*s.shape, self.min_saving) for s in found],
                                   self.params)
        picks: list[int | None] = []
        for spectrum in spectra:
            full = len(spectrum.values)
            if self.rank:
                picks.append(min(self.rank, full))
            elif self.energy:
                picks.append(ranks.by_energy(spectrum.energy, self.energy))
            elif self.error:
                picks.append(ranks.by_error(spectrum.energy, self.error))
            else:
                picks.append(ranks.by_ratio(full, self.ratio or 0.5))
        return picks

    def _kept(self, site: sites.Site, rank: int | None, top: int, spectrum: Spectrum) -> str:
        outputs, features = site.shape
        if top == 0:
            return (f"{site.label} kept dense: {outputs}x{features} saves less than "
                    f"{self.min_saving:.0%} at any rank")
        if rank is None:
            return (f"{site.label} kept dense: the parameter budget is better spent "
                    f"elsewhere (rank {top} would leave error {np.sqrt(spectrum.energy[top]):.3f})")
        saving = 1 - rank * (outputs + features) / (outputs * features)
        return (f"{site.label} kept dense: rank {rank} of {len(spectrum.values)} would save "
                f"{saving:.0%} of its {outputs}x{features} weights, less than "
                f"min_saving={self.min_saving:.0%} (at most rank {top})")



