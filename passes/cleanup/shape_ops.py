"""``fuse-shape-ops``: collapse chains of shape-only ops and materialise shapes that are
known statically (bit-exact).

- ``Reshape(Reshape(x, a), b)``         -> ``Reshape(x, b)``
- ``Transpose(Transpose(x, p), q)``     -> ``Transpose(x, p∘q)`` (or ``x``)
- ``Unsqueeze(Unsqueeze(x))``, ``Reshape(Squeeze(x), [-1])`` -> one op
- ``Cast(Cast(x))`` where the inner cast loses nothing -> one Cast
- collapsible Slices -> fewer Slices
- ``Reshape(x, Concat(Gather(Shape(x)), ...))`` with a statically known result shape
  -> ``Reshape(x, constant)`` (at most one symbolic dim becomes -1)
- ``Reshape(x, Concat(Slice(Shape(x), 0, k), c))`` -> ``Reshape(x, [0]*k + c)``
  (``shape_symbols``)

All rules are onnxscript's; static ``Shape -> Gather -> Concat`` chains with fully known
shapes fold in ``fold-constants``. The rules need output shapes, so the pass first runs
ONNX shape inference with data propagation (which follows a dynamic batch dimension through
``Shape -> Gather -> Concat -> Reshape``); a model it cannot infer keeps the shapes it had.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    cast_cast_rule,
    collapse_slice2_rule,
    collapse_slice_rule,
    materialize_reshape_shape_rule,
    reshape_reshape_rule,
    squeeze_reshape_1d_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)

from onnxpress.ir.analysis import all_graphs
from onnxpress.ir.edit import TensorShapeInference
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup import shape_symbols
from onnxpress.passes.cleanup._wrapped import rewrite_pass, run_wrapped

__all__ = ["FuseShapeOps"]


def shape_rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            cast_cast_rule,
            reshape_reshape_rule,
            transpose_transpose_rule,
            unsqueeze_unsqueeze_rule,
            squeeze_reshape_1d_rule,
            collapse_slice_rule,
            collapse_slice2_rule,
            materialize_reshape_shape_rule,
            *shape_symbols.rules().rules,
        ]
    )


@dataclasses.dataclass(frozen=True)
class FuseShapeOps(Pass):
    name = "fuse-shape-ops"
    visits_subgraphs = True

    def call(self, model: ir.Model) -> PassStats:
        result = run_wrapped(model, [TensorShapeInference(), rewrite_pass(shape_rules())])
        folded = sum(shape_symbols.fold_static_entries(g) for g in all_graphs(model))
        result.stats["static_shape_entries_folded"] = folded
        result.modified |= folded > 0
        return result
