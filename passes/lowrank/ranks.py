"""Rank selection: per layer by ratio, fixed rank, energy or error, or a global parameter
budget spread unevenly across layers.

A layer of ``outputs x features`` factored at rank ``r`` holds ``r (outputs + features)``
parameters and costs as many multiply-adds per row as it holds; the dense layer holds
``outputs x features``. ``limit`` is the largest rank that still saves ``min_saving`` of
both; a rule asking for more leaves the layer dense.

The global rule (``params=p``: keep ``p`` of the eligible layers' parameters) chooses, for
every layer, dense or a rank ``r <= limit``, minimising the summed relative squared error
``tail_l(r)`` (from the layer's own spectrum: whitened, it is the layer's relative output
error) plus ``mu`` times the parameters; ``mu`` is bisected until the total fits the
budget. The tails are convex in ``r``, so this is the budget's optimum on their convex hull:
layers whose spectrum falls off fast (WeLore's low-rank components) give up more rank,
layers with a flat tail stay dense.
"""

from __future__ import annotations

import math

import numpy as np


def limit(outputs: int, features: int, min_saving: float) -> int:
    """The largest rank whose factors hold at most ``1 - min_saving`` of the dense
    layer's parameters (0: none does)."""
    return min(int(math.floor((1 - min_saving) * outputs * features / (outputs + features))),
               min(outputs, features))


def by_ratio(full: int, ratio: float) -> int:
    return max(1, int(round(ratio * full)))


def by_energy(energy: np.ndarray, kept: float) -> int:
    """The smallest rank keeping ``kept`` of the energy (``energy`` as
    ``Spectrum.energy``: the relative tail for r = 0..R)."""
    return max(1, int(np.argmax(energy <= 1 - kept + 1e-12)))


def by_error(energy: np.ndarray, error: float) -> int:
    """The smallest rank whose relative (Frobenius, or output when whitened) error is at
    most ``error``."""
    return max(1, int(np.argmax(np.sqrt(energy) <= error + 1e-12)))


def by_budget(tails: list[np.ndarray], sizes: list[tuple[int, int]], limits: list[int],
              keep: float) -> list[int | None]:
    """Per layer, a rank or None (dense), keeping ``keep`` of the layers' parameters in
    all. ``tails[l]`` is the layer's relative tail for r = 0..R."""
    dense = [o * f for o, f in sizes]
    budget = keep * sum(dense)

    def choose(mu: float) -> tuple[list[int | None], float]:
        picks: list[int | None] = []
        total = 0.0
        for tail, (o, f), top, full in zip(tails, sizes, limits, dense):
            ranks = np.arange(1, top + 1)
            cost = tail[1 : top + 1] + mu * ranks * (o + f)
            best = int(np.argmin(cost)) if top else -1
            if top == 0 or mu * full <= cost[best]:
                picks.append(None)
                total += full
            else:
                picks.append(int(ranks[best]))
                total += ranks[best] * (o + f)
        return picks, total

    low, high = 0.0, 1.0
    while choose(high)[1] > budget and high < 1e30:
        high *= 10
    for _ in range(100):
        mid = math.sqrt(low * high) if low else high / 1e6
        if choose(mid)[1] > budget:
            low = mid
        else:
            high = mid
    return choose(high)[0]
