"""``eliminate-identity``: remove nodes that pass their input through unchanged (bit-exact).

- ``Identity(x)``                          -> ``x`` (onnx_ir's IdentityEliminationPass)
- inference ``Dropout``, no-op ``Cast``/``Expand``/``Transpose``/``Reshape``/``Slice``/``Pad``,
  ``x*1``, ``x+0``, ``x-0``, ``x/1``       -> ``x`` (onnxscript's rules and ours in
  ``noop_rules``)

A no-op whose output is a graph output keeps an Identity only where the graph needs one to
keep the output's name.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass
from onnxscript.rewriter._rewrite_rule import RewriteRuleSet
from onnxscript.rewriter.rules.common import _basic_rules, _no_op

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup import noop_rules
from onnxpress.passes.cleanup._wrapped import rewrite_pass, run_wrapped

__all__ = ["EliminateIdentity"]


def identity_rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            *_no_op.mul_by_1_rule.commute(),
            *_no_op.add_0_rule.commute(),
            _no_op.sub_0_rule,
            _no_op.div_by_1_rule,
            _basic_rules.no_op_cast_rule,
            _basic_rules.no_op_expand_rule,
            _basic_rules.no_op_transpose_rule,
            *noop_rules.rules().rules,
        ]
    )


@dataclasses.dataclass(frozen=True)
class EliminateIdentity(Pass):
    name = "eliminate-identity"

    def call(self, model: ir.Model) -> PassStats:
        return run_wrapped(model, [rewrite_pass(identity_rules()), IdentityEliminationPass()])
