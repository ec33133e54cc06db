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
whitened as SVD-LLM does (:mod:`.factor`: ``W S``, ``S`` the Cholesky factor of the input
Gram, truncated, whitening undone), from one streaming run that accumulates each distinct
layer input's Gram (:mod:`.sites`); ``sequential`` (default with data and at most
``SEQUENTIAL_GROUPS`` distinct layer inputs) then factors layer after layer, each fitted to
what it sees once the layers before it are factored (:mod:`.sequential`: a calibration run
per input, which an LLM cannot afford). Only one layer's singular vectors are held at a
time (``allocate=sensitivity``, at most ``SENSITIVITY_LAYERS`` layers, keeps them all).
A factored layer whose estimated relative error passes ``ERROR_WARNING`` is named in a note.

SmolLM2-135M (210 linear layers, ``params`` budget spread by tails, one-shot, 20 x 128
calibration tokens): see ``benchmarks/suites/llm_compress.py`` for perplexity against
compression, plain against whitened.

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
from onnxpress.passes.lowrank.factor import DAMP, Spectrum, decompose, singular_values, tail
from onnxpress.passes.lowrank.sensitivity import measure
from onnxpress.passes.lowrank.sequential import factor_in_order

__all__ = ["LowRank"]

RULES = ("ratio", "rank", "energy", "error", "params")
#: the most distinct layer inputs a default (``sequential`` unset) sequential refit takes
SEQUENTIAL_GROUPS = 32
#: the most layers whose sensitivity ``allocate=sensitivity`` measures (a model run each)
SENSITIVITY_LAYERS = 48
#: a factored layer whose estimated relative output error (whitened: on the calibration
#: data; plain: of its weight) passes this gets a note: the model will likely suffer
ERROR_WARNING = 0.3
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
    # (default: with data and at most SEQUENTIAL_GROUPS distinct layer inputs)
    sequential: bool | None = None
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
        sequential = self._sequential(found, aware, notes)
        spectra: list[Spectrum] | None = None
        sensitivity = None
        if self._allocation(found, notes) == "sensitivity":
            spectra = [decompose(s.matrix, s.statistics(), self.damp) for s in found]
            energies = [s.energy for s in spectra]
            sensitivity = measure(model, found, spectra,
                                  list(itertools.islice(self.data, min(self.max_batches, 32))))
        else:  # the values only: one layer's singular vectors in memory at a time
            energies = [tail(singular_values(s.matrix, s.statistics(), self.damp))
                        for s in found]
        chosen = self._ranks(found, energies, sensitivity)
        planned, before, after = [], 0, 0
        for i, (site, energy, rank) in enumerate(zip(found, energies, chosen)):
            outputs, features = site.shape
            before += outputs * features
            top = ranks.limit(outputs, features, self.min_saving)
            if rank is None or rank > top:
                notes.append(self._kept(site, rank, top, energy))
                after += outputs * features
            else:
                planned.append((site, i, rank))
                after += rank * (outputs + features)
        if sequential:
            batches = list(itertools.islice(self.data, self.max_batches))
            refitted = dict(factor_in_order(model, [(s, r) for s, _, r in planned], batches,
                                            self.damp))
            errors = [refitted[s].energy[r] for s, _, r in planned]
        else:
            errors = []
            for site, i, rank in planned:
                spectrum = (spectra[i] if spectra is not None
                            else decompose(site.matrix, site.statistics(), self.damp))
                rewrite.factor(model.graph, site.node, site.stored, *spectrum.factors(rank))
                errors.append(spectrum.energy[rank])
        layers = [{"layer": site.node.name, "rank": rank, "full": len(energies[i]) - 1,
                   "error": float(np.sqrt(error))}
                  for (site, i, rank), error in zip(planned, errors)]
        notes.extend(_warnings(layers, aware))
        remove_unread(weights, producers=())
        stats = {"layers_factored": len(layers), "layers": len(found), "aware": aware,
                 "sequential": sequential, "weights_before": before, "weights_after": after,
                 "factored": layers}
        return PassStats(model, modified=bool(layers), stats=stats, notes=notes)

    def _sequential(self, found: list[sites.Site], aware: bool, notes: list[str]) -> bool:
        """Whether to refit layer after layer: asked for, or (by default) with data and at
        most ``SEQUENTIAL_GROUPS`` distinct layer inputs (each costs a calibration run of
        two ONNX Runtime sessions: SmolLM2's 120 took over 26 minutes and 8 GB)."""
        groups = len({s.node.inputs[0].name for s in found})
        if not aware or self.sequential is False:
            return False
        if self.sequential is None and groups > SEQUENTIAL_GROUPS:
            notes.append(f"one-shot fit from the model's own statistics: {groups} distinct "
                         f"layer inputs, more than {SEQUENTIAL_GROUPS} for a sequential refit "
                         "(a calibration run each; sequential=true forces it)")
            return False
        return True

    def _allocation(self, found: list[sites.Site], notes: list[str]) -> str:
        """``sensitivity`` when the parameter budget is measured (a model run per layer),
        else ``tail``; more than ``SENSITIVITY_LAYERS`` layers are spread by tails."""
        if not self.params or self.allocate != "sensitivity":
            return "tail"
        if self.data is None:
            notes.append("no calibration data: the parameter budget is spread by singular-"
                         "value tails, not measured sensitivity")
            return "tail"
        if len(found) > SENSITIVITY_LAYERS:
            notes.append(f"the parameter budget is spread by singular-value tails: measuring "
                         f"{len(found)} layers' sensitivity would run the model "
                         f"{len(found)} times (at most {SENSITIVITY_LAYERS})")
            return "tail"
        return "sensitivity"

    def _measure(self, model: ir.Model, found: list[sites.Site], notes: list[str]) -> None:
        """Every layer input's ``H``, in one streaming run (shared by its readers)."""
        wide = [site for site in found if site.shape[1] > sites.MAX_FEATURES]
        for site in wide:
            notes.append(f"{site.label}: {site.shape[1]} input features; factored without "
                         "activation statistics")
        stream(model, sites.share([s for s in found if s not in wide]), self.data,
               max_batches=self.max_batches)

    def _ranks(self, found: list[sites.Site], energies: list[np.ndarray],
               weights: np.ndarray | None = None) -> list[int | None]:
        if self.params:
            scale = np.ones(len(energies)) if weights is None else weights
            tails = [e * w for e, w in zip(energies, scale)]
            return ranks.by_budget(tails, [s.shape for s in found],
                                   [ranks.limit(*s.shape, self.min_saving) for s in found],
                                   self.params)
        picks: list[int | None] = []
        for energy in energies:
            full = len(energy) - 1
            if self.rank:
                picks.append(min(self.rank, full))
            elif self.energy:
                picks.append(ranks.by_energy(energy, self.energy))
            elif self.error:
                picks.append(ranks.by_error(energy, self.error))
            else:
                picks.append(ranks.by_ratio(full, self.ratio or 0.5))
        return picks

    def _kept(self, site: sites.Site, rank: int | None, top: int, energy: np.ndarray) -> str:
        outputs, features = site.shape
        if top == 0:
            return (f"{site.label} kept dense: {outputs}x{features} saves less than "
                    f"{self.min_saving:.0%} at any rank")
        if rank is None:
            return (f"{site.label} kept dense: the parameter budget is better spent "
                    f"elsewhere (rank {top} would leave error {np.sqrt(energy[top]):.3f})")
        saving = 1 - rank * (outputs + features) / (outputs * features)
        return (f"{site.label} kept dense: rank {rank} of {len(energy) - 1} would save "
                f"{saving:.0%} of its {outputs}x{features} weights, less than "
                f"min_saving={self.min_saving:.0%} (at most rank {top})")


def _warnings(layers: list[dict[str, Any]], aware: bool) -> list[str]:
    """A note when factored layers lose much: their estimated relative error (output error
    on the calibration data when whitened, weight error when plain)."""
    worst = sorted((f for f in layers if f["error"] > ERROR_WARNING),
                   key=lambda f: -f["error"])
    if not worst:
        return []
    kind = "output error on the calibration data" if aware else "weight error (plain SVD)"
    shown = ", ".join(f"{f['layer']} {f['error']:.2f}" for f in worst[:3])
    return [f"{len(worst)} of {len(layers)} factored layers keep a relative {kind} above "
            f"{ERROR_WARNING}: {shown}{', ...' if len(worst) > 3 else ''}; expect the model's "
            "quality to drop well beyond that layer (lower the compression, or check it)"]
