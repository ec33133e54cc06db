"""``cleanup``: the cleanup passes repeated until none of them changes the graph.

Order per round: fold-constants, fuse-shape-ops, eliminate-identity, fold-batchnorm, cse,
dce, cycling until every member has run once since the last change. Each member keeps
its own exactness promise (all bit-exact but fold-batchnorm, which is exact up to float
rounding). Stops after ``max_rounds`` even without a fixed point and says so.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup.batchnorm import FoldBatchNorm
from onnxpress.passes.cleanup.cse import Cse
from onnxpress.passes.cleanup.dce import Dce
from onnxpress.passes.cleanup.fold_constants import FoldConstants
from onnxpress.passes.cleanup.identity import EliminateIdentity
from onnxpress.passes.cleanup.shape_ops import FuseShapeOps

__all__ = ["Cleanup"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Cleanup(Pass):
    name = "cleanup"
    visits_subgraphs = True
    max_rounds: int = 8
    fold_batchnorm: bool = True
    max_output_elements: int = FoldConstants.max_output_elements

    def members(self) -> list[Pass]:
        members: list[Pass] = [
            FoldConstants(max_output_elements=self.max_output_elements),
            FuseShapeOps(),
            EliminateIdentity(),
        ]
        if self.fold_batchnorm:
            members.append(FoldBatchNorm())
        return [*members, Cse(), Dce()]

    def call(self, model: ir.Model) -> PassStats:
        result = PassStats(model, modified=False, stats={"rounds": 0})
        members = self.members()
        # Cycle through the members; stop once every member has run since the last change
        # (a member that saw no change since its own last run would find nothing new).
        quiet, steps, notes = 0, 0, []
        while quiet < len(members) and steps < self.max_rounds * len(members):
            member = members[steps % len(members)]
            if steps % len(members) == 0:
                result.stats["rounds"] += 1
                notes = []
            steps += 1
            step = member(model)
            quiet = 0 if step.modified else quiet + 1
            result.modified |= step.modified
            if isinstance(step, PassStats):
                notes.extend(step.notes)
                for key, value in step.stats.items():
                    if isinstance(value, int):
                        counter = f"{member.name}.{key}"
                        result.stats[counter] = result.stats.get(counter, 0) + value
        result.notes = notes
        if quiet < len(members):
            result.notes.insert(0, f"no fixed point after {self.max_rounds} rounds")
        return result
