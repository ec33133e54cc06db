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
``Shape -> Gather -> Concat -> Reshape``; not where that would spell out a huge value, and
a note says so); a model it cannot infer keeps the shapes it had.
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

from onnxpress.ir.analysis import all_graphs, constant_array, opset_version
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
        # a graph output's declared shape is the exporter's word, not inferred: ddddocr's
        # recogniser declares [1, seqlen] for a [24, 1, 8210] output, and a Reshape made
        # constant from it changed what the model computes
        declared = {value: value.shape for value in model.graph.outputs}
        for value in declared:
            value.shape = None
        try:
            notes = TensorShapeInference(self.name)(model).notes
            result = run_wrapped(model, [rewrite_pass(shape_rules())])
        finally:
            for value, shape in declared.items():
                value.shape = shape  # the file keeps what the exporter declared
        _drop_allowzero_before_14(model)
        folded = sum(shape_symbols.fold_static_entries(g) for g in all_graphs(model))
        result.stats["static_shape_entries_folded"] = folded
        result.modified |= folded > 0
        result.notes += notes
        return result


#: Reshape's ``allowzero`` exists from opset 14
_ALLOWZERO_OPSET = 14


def _drop_allowzero_before_14(model: ir.Model) -> None:
    """onnxscript's Reshape rules write ``allowzero`` whatever the model's opset (1 where
    they materialize a shape): below 14 the attribute does not exist, and onnx.checker and
    ONNX Runtime refuse the file (ddddocr's opset-12 recogniser). It goes wherever it
    changes nothing: 0, or a constant target shape without a 0 entry."""
    if opset_version(model) is None or opset_version(model) >= _ALLOWZERO_OPSET:
        return
    for node in model.graph.all_nodes():
        if node.op_type != "Reshape" or "allowzero" not in node.attributes:
            continue
        target = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if node.attributes.get_int("allowzero", 0) == 0 or (
                target is not None and not (target == 0).any()):
            del node.attributes["allowzero"]
