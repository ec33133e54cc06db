"""``lint-tensorrt``: checks that a model is in the form TensorRT builds (see
:mod:`onnxpress.passes.lint.tensorrt_rules`); changes nothing.

Each violation is a note ``rule: element: what to do``; the stats count them by rule. With
``strict=true`` a violation stops the pipeline (exit code 1), so a deployment build fails
before it reaches the engine builder.
"""

from __future__ import annotations

import collections
import dataclasses

import onnx_ir as ir

from onnxpress.errors import CheckFailedError
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.lint.tensorrt_rules import Violation, check_model


@dataclasses.dataclass(frozen=True)
class LintTensorrt(Pass):
    name = "lint-tensorrt"

    dynamic: bool = False  # dynamic input dims are fine: the engine gets an optimization profile
    strict: bool = False  # a violation fails the run (exit code 1)

    def violations(self, model: ir.Model) -> list[Violation]:
        return check_model(model, dynamic=self.dynamic)

    def call(self, model: ir.Model) -> PassStats:
        found = self.violations(model)
        counts = collections.Counter(v.rule for v in found)
        result = PassStats(model, modified=False, stats={"violations": len(found), **counts})
        result.notes = [f"tensorrt {v.line()}" for v in found]
        if found and self.strict:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise CheckFailedError(f"lint-tensorrt: {found[0].line()}{more}")
        return result
