"""``fuse-shape-ops``: collapse chains of shape-only ops and materialise shapes that are
known statically (bit-exact).

- ``Reshape(Reshape(x, a), b)``         -> ``Reshape(x, b)``
- ``Transpose(Transpose(x, p), q)``     -> ``Transpose(x, p∘q)`` (or ``x``)
- ``Unsqueeze(Unsqueeze(x))``, ``Reshape(Squeeze(x), [-1])``, ``Flatten`` -> one op
- ``Cast(Cast(x))`` where the inner cast loses nothing -> one Cast
- adjacent ``Slice``s that split a tensor, and collapsible Slices -> ``Split``/fewer Slices
- ``Reshape(x, Concat(Gather(Shape(x)), ...))`` with a statically known result shape
  -> ``Reshape(x, constant)`` (at most one symbolic dim becomes -1)

All rules are onnxscript's; static ``Shape -> Gather -> Concat`` chains with fully known
shapes fold in ``fold-constants``.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxscript.rewriter._rewrite_rule import RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    _basic_rules,
    _collapse_slices,
    _materialize_reshape_shape,
)

from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup._wrapped import rewrite_pass, run_wrapped

__all__ = ["FuseShapeOps"]


def shape_rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            _basic_rules.cast_cast_rule,
            _basic_rules.flatten_to_reshape_rule,
            _basic_rules.reshape_reshape_rule,
            _basic_rules.slice_split_rule,
            _basic_rules.transpose_transpose_rule,
            _basic_rules.unsqueeze_unsqueeze_rule,
            _basic_rules.squeeze_reshape_1d_rule,
            *_collapse_slices.rules.rules,
            *_materialize_reshape_shape.rules.rules,
        ]
    )


@dataclasses.dataclass(frozen=True)
class FuseShapeOps(Pass):
    name = "fuse-shape-ops"

    def call(self, model: ir.Model) -> PassStats:
        return run_wrapped(model, [rewrite_pass(shape_rules())])
