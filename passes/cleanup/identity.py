"""``eliminate-identity``: remove nodes that pass their input through unchanged (bit-exact).

- ``Identity(x)``                          -> ``x`` (``identity_nodes``: keeps an Identity
                                              only where a graph output needs it)
- inference ``Dropout``, no-op ``Cast``/``Expand``/``Transpose``/``Reshape``/``Slice``/``Pad``,
  ``x*1``, ``x+0``, ``x-0``, ``x/1``       -> ``x`` (onnxscript's rules and ours in
  ``noop_rules``; the arithmetic ones only for constants exactly 1 or 0 that do not
  broadcast x to a larger shape: equal values, though ``-0.0 + 0`` gives ``+0.0``)

A no-op whose output is a graph output keeps an Identity only where the graph needs one to
keep the output's name.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
)

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup import noop_rules
from onnxpress.passes.cleanup._wrapped import rewrite_pass, run_wrapped
from onnxpress.passes.cleanup.identity_nodes import remove_identities

__all__ = ["EliminateIdentity"]


def identity_rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            no_op_cast_rule,
            no_op_expand_rule,
            no_op_transpose_rule,
            *noop_rules.rules().rules,
        ]
    )


@dataclasses.dataclass(frozen=True)
class EliminateIdentity(Pass):
    name = "eliminate-identity"
    visits_subgraphs = True

    def call(self, model: ir.Model) -> PassStats:
        result = run_wrapped(model, [rewrite_pass(identity_rules())])
        removed = remove_identities(model)
        result.stats["nodes_removed"] += removed
        result.modified |= removed > 0
        return result
