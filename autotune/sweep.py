"""What a search tries before the sampler: each family's sensitivity, measured once, and the
budget spent across the families by it.

1. **Sweep.** Every family alone, bisected over its settings (mildest first; off holds) to
   its strongest setting within the budget: at most three candidates for six settings,
   probed for all families in the same rounds. A candidate that does not compile counts as
   outside the budget. The same round measures the float tail alone (every family off), the
   baseline the families' costs are relative to.
2. **Allocation.** From the sweep, each family's cost of the budget (the original's slack
   minus the candidate's) and its speed (cost relative to the baseline), at every setting up
   to its limit (settings the bisection skipped are interpolated between their measured
   neighbours, off costing nothing). Costs of the budget are taken as adding up and speeds as
   multiplying across families; the cheapest combination predicted to keep ``MARGINS`` of
   the budget in hand is proposed, per margin, as the families' share of the one budget.
   Interactions the sum misses (two prunings compound; int8 noise on a pruned layer) are
   what the margins are for, and what the sampler then explores around.
3. **Limits.** The sampler's proposals are held to each family's limit (:func:`capped`):
   past it, the family breaks the budget on its own; and a proposal whose families spent
   well over the budget between them alone is not built (:func:`plausible`).

Both are functions of the finished candidates alone, so an interrupted search proposes
the same trials when it resumes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from onnxpress.autotune.space import Space

__all__ = ["MARGINS", "PLAUSIBLE", "capped", "plausible", "proposals"]

#: shares of the budget a proposed combination keeps unspent, by the additive prediction
MARGINS = (0.0, 0.3, 0.6)
#: the sampler's proposals predicted to spend more than this many budgets are not built
PLAUSIBLE = 1.25

Settings = dict[str, Any]


def proposals(space: Space, finished: Sequence[Any], allowance: float) -> list[Settings]:
    """The settings to try next, before the sampler: the sweep's next probes, then the
    allocation's combinations; empty when both are done. ``finished``: the candidates so far
    (``settings``, ``holds``, ``slack``, ``cost``, ``rejected``); ``allowance``: the
    original model's slack under the budget."""
    off = {k.family: k.values[0] for k in space.knobs}
    tried = {_key(c.settings) for c in finished}
    alone = _alone(finished, off)
    probes = [dict(off)] if _key(off) not in tried else []
    for knob in space.knobs:
        state = _bisect(knob.values, alone.get(knob.family, {}))
        if not isinstance(state, int):
            probes.append({**off, knob.family: knob.values[state[0]]})
    if probes:
        return probes
    _, limits = _swept(space, finished)
    baseline = alone.get(None)
    if baseline is None or baseline.cost is None or not math.isfinite(allowance):
        return []
    combos = _allocate(space, alone, limits, baseline.cost, allowance)
    return [c for c in combos if _key(c) not in tried]


def capped(space: Space, settings: Mapping[str, Any], finished: Sequence[Any]) -> Settings:
    """``settings`` with each family held to its strongest setting within the budget alone
    (a setting that breaks the budget on its own breaks it beside any other family too),
    once the sweep has found the limits; as given before."""
    swept = _swept(space, finished)
    if swept is None:
        return dict(settings)
    limits = swept[1]
    return {k.family: k.values[min(k.values.index(settings[k.family]), limits[k.family])]
            for k in space.knobs}


def plausible(space: Space, settings: Mapping[str, Any], finished: Sequence[Any],
              allowance: float) -> bool:
    """Whether capped ``settings`` may hold: the shares of the budget its families spent
    alone add up to at most ``PLAUSIBLE`` times the budget (on MiniLM the sum predicted
    every combination measured within 0.001 of Spearman; the slack covers models where
    errors partly cancel). True before the sweep has finished."""
    swept = _swept(space, finished)
    if swept is None or not math.isfinite(allowance):
        return True
    curves = _curves(space, *swept, 1.0, allowance)
    spent = sum(curves[k.family][k.values.index(settings[k.family])][0] for k in space.knobs)
    return spent <= allowance * PLAUSIBLE


def _swept(space: Space, finished: Sequence[Any]) -> tuple[dict, dict[str, int]] | None:
    """Once every family's limit is known: the single-family candidates (:func:`_alone`)
    and family -> index of its strongest setting within the budget alone; else None."""
    alone = _alone(finished, {k.family: k.values[0] for k in space.knobs})
    limits = {k.family: _bisect(k.values, alone.get(k.family, {})) for k in space.knobs}
    if not all(isinstance(i, int) for i in limits.values()):
        return None
    return alone, limits


def _key(settings: Mapping[str, Any]) -> tuple:
    return tuple(sorted(settings.items()))


def _alone(finished: Sequence[Any], off: Mapping[str, Any]) -> dict:
    """family -> {setting index -> candidate} for candidates changing that family alone;
    None -> the candidate with every family off."""
    out: dict = {}
    for c in finished:
        on = [f for f, v in c.settings.items() if v != off.get(f)]
        if not on:
            out[None] = c
        elif len(on) == 1:
            out.setdefault(on[0], {})[c.settings[on[0]]] = c
    return out


def _bisect(values: tuple, measured: Mapping[Any, Any]) -> int | tuple[int]:
    """The index of the strongest setting within the budget when known, else ``(index,)``
    of the next setting to probe. Index 0 (off) holds; past the weakest setting measured
    outside the budget nothing is tried."""
    fails = [i for i, v in enumerate(values) if v in measured and not _holds(measured[v])]
    high = min(fails, default=len(values))
    low = max((i for i, v in enumerate(values[:high]) if v in measured
               and _holds(measured[v])), default=0)
    if high - low <= 1:
        return low
    return ((low + high) // 2,)


def _holds(candidate: Any) -> bool:
    return candidate.rejected is None and candidate.holds and candidate.cost is not None


def _allocate(space: Space, alone: dict, limits: Mapping[str, int], baseline: float,
              allowance: float) -> list[Settings]:
    """Per margin, the combination of two or more families cheapest by the prediction."""
    curves = _curves(space, alone, limits, baseline, allowance)
    families = [k.family for k in space.knobs]
    combos = []
    for indices in itertools.product(*(range(len(curves[f])) for f in families)):
        if sum(i > 0 for i in indices) < 2:
            continue  # one family alone is the sweep's
        spent = sum(curves[f][i][0] for f, i in zip(families, indices))
        cost = math.prod(curves[f][i][1] for f, i in zip(families, indices))
        combos.append((cost, spent, indices))
    combos.sort()
    chosen: list[Settings] = []
    for margin in MARGINS:
        best = next((ix for cost, spent, ix in combos
                     if spent <= allowance * (1 - margin)), None)
        if best is None:
            continue
        settings = {k.family: k.values[i] for k, i in zip(space.knobs, best)}
        if settings not in chosen:
            chosen.append(settings)
    return chosen


def _curves(space: Space, alone: dict, limits: Mapping[str, int], baseline: float,
            allowance: float) -> dict[str, list[tuple[float, float]]]:
    """family -> (budget spent, time kept) at each setting up to its limit."""
    curves = {}
    for knob in space.knobs:
        measured = alone.get(knob.family, {})
        points = {0: (0.0, 1.0)}
        for i, value in enumerate(knob.values[1:limits[knob.family] + 1], start=1):
            if value in measured:
                c = measured[value]
                points[i] = (allowance - c.slack, c.cost / baseline)
        curves[knob.family] = [_interpolate(points, i)
                               for i in range(limits[knob.family] + 1)]
    return curves


def _interpolate(points: Mapping[int, tuple[float, float]], index: int) -> tuple[float, float]:
    """The measured (spent, cost) at ``index``, or the straight line between the nearest
    measured indices either side (the last measured one past the end)."""
    if index in points:
        return points[index]
    below = max(i for i in points if i < index)
    above = min((i for i in points if i > index), default=None)
    if above is None:
        return points[below]
    t = (index - below) / (above - below)
    return tuple(a + t * (b - a) for a, b in zip(points[below], points[above]))
