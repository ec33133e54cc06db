"""The sweep before the sampler (:mod:`onnxpress.autotune.sweep`), against a model of the
world whose answers are known: each family spends a known share of the budget and saves a
known share of the time per setting, shares adding and multiplying across families."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

from onnxpress.autotune.space import Knob, Space
from onnxpress.autotune.sweep import capped, plausible, proposals

SPACE = Space((Knob("tome", (1.0, 0.9, 0.8, 0.7, 0.6, 0.5), ""),
               Knob("prune", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), ""),
               Knob("quantize", ("float", "int8"), "")), ())
ALLOWANCE = 1.05
#: per family, per setting index: the budget spent and the share of the time kept; straight
#: lines, which is what the sweep assumes between the settings it measures
SPENT = {"tome": (0, 0.3, 0.6, 0.9, 1.2, 1.5), "prune": (0, 0.2, 0.4, 0.6, 0.8, 1.0),
         "quantize": (0, 0.2)}
KEPT = {"tome": (1, 0.9, 0.8, 0.7, 0.6, 0.5), "prune": (1, 0.95, 0.9, 0.85, 0.8, 0.75),
        "quantize": (1, 0.5)}
BASELINE = 0.9  # the float tail alone


def world(settings: dict) -> SimpleNamespace:
    index = {k.family: k.values.index(settings[k.family]) for k in SPACE.knobs}
    spent = sum(SPENT[f][i] for f, i in index.items())
    cost = BASELINE * math.prod(KEPT[f][i] for f, i in index.items())
    return SimpleNamespace(settings=settings, holds=spent <= ALLOWANCE, slack=ALLOWANCE - spent,
                           cost=cost, rejected=None)


def run_sweep() -> list[list[dict]]:
    finished, rounds = [], []
    while proposed := proposals(SPACE, finished, ALLOWANCE):
        rounds.append(proposed)
        finished += [world(s) for s in proposed]
        assert len(rounds) < 10
    return rounds


def test_every_family_is_probed_at_once_and_bisected_to_its_limit() -> None:
    rounds = run_sweep()
    off = {"tome": 1.0, "prune": 0.0, "quantize": "float"}
    assert rounds[0] == [off, {**off, "tome": 0.7}, {**off, "prune": 0.3},
                         {**off, "quantize": "int8"}]
    alone = [s for r in rounds for s in r if sum(s[f] != off[f] for f in off) == 1]
    tried = {f: [s[f] for s in alone if s[f] != off[f]] for f in off}
    assert len(tried["tome"]) <= 3 and len(tried["prune"]) <= 3
    # the strongest setting within the budget alone was measured, and the next one failed
    assert 0.7 in tried["tome"] and 0.6 in tried["tome"]  # spends 1.2
    assert 0.5 in tried["prune"]  # the strongest setting holds


def test_the_allocation_proposes_the_best_combination_the_model_of_the_world_allows() -> None:
    rounds = run_sweep()
    combined = list(rounds[-1])
    assert all(sum(v != k.values[0] for k, v in zip(SPACE.knobs, s.values())) >= 2
               for s in combined)
    best = min((world(dict(zip(("tome", "prune", "quantize"), values)))
                for values in itertools.product(*(k.values for k in SPACE.knobs))),
               key=lambda c: (not c.holds, c.cost))
    # the sweep skipped settings; it interpolated them as the world is, so its first
    # proposal is the true optimum
    assert world(combined[0]).holds
    assert math.isclose(world(combined[0]).cost, best.cost)
    # later proposals keep more of the budget in hand
    slacks = [world(s).slack for s in combined]
    assert slacks == sorted(slacks) and len(combined) >= 2


def test_a_finished_sweep_proposes_nothing_more_and_a_resumed_one_the_same() -> None:
    rounds = run_sweep()
    finished = [world(s) for r in rounds for s in r]
    assert proposals(SPACE, finished, ALLOWANCE) == []
    # cut after the first round: the same second round
    assert proposals(SPACE, [world(s) for s in rounds[0]], ALLOWANCE) == rounds[1]


def test_past_the_sweep_a_family_is_held_to_its_limit_alone() -> None:
    rounds = run_sweep()
    finished = [world(s) for r in rounds for s in r]
    strongest = {"tome": 0.5, "prune": 0.5, "quantize": "int8"}
    # tome spends 1.2 of 1.05 at 0.6 alone, so 0.7 is as far as it goes; prune holds at 0.5
    assert capped(SPACE, strongest, finished) == {"tome": 0.7, "prune": 0.5, "quantize": "int8"}
    # before the sweep has finished, nothing is held
    assert capped(SPACE, strongest, finished[:4]) == strongest


def test_a_combination_the_sweep_predicts_far_outside_the_budget_is_not_plausible() -> None:
    rounds = run_sweep()
    finished = [world(s) for r in rounds for s in r]
    # tome 0.7 spends 0.9 and prune 0.5 spends 1.0 alone: 1.9 of 1.05 together
    assert not plausible(SPACE, {"tome": 0.7, "prune": 0.5, "quantize": "float"}, finished,
                         ALLOWANCE)
    assert plausible(SPACE, {"tome": 0.9, "prune": 0.2, "quantize": "int8"}, finished,
                     ALLOWANCE)
    # before the sweep has finished, anything may hold
    assert plausible(SPACE, {"tome": 0.7, "prune": 0.5, "quantize": "float"}, finished[:4],
                     ALLOWANCE)
