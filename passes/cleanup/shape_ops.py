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

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass
from onnxscript.rewriter._rewrite_rule import RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    _basic_rules,
    _collapse_slices,
    _materialize_reshape_shape,
)

from onnxpress.ir.analysis import all_graphs
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup import shape_symbols
from onnxpress.passes.cleanup._wrapped import rewrite_pass, run_wrapped

__all__ = ["FuseShapeOps"]


def shape_rules() -> RewriteRuleSet:
    return RewriteRuleSet(
        [
            _basic_rules.cast_cast_rule,
            _basic_rules.reshape_reshape_rule,
            _basic_rules.transpose_transpose_rule,
            _basic_rules.unsqueeze_unsqueeze_rule,
            _basic_rules.squeeze_reshape_1d_rule,
            *_collapse_slices.rules.rules,
            *_materialize_reshape_shape.rules.rules,
            *shape_symbols.rules().rules,
        ]
    )


class TensorShapeInference(ir.passes.InPlacePass):
    """ONNX shape inference with data propagation, trusted for tensors only: with data
    propagation ONNX can type a sequence as a tensor (SplitToSequence), so outputs that may
    be sequences, maps or optionals keep the type they had."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 1)
        before = {
            value: (value.type, value.shape)
            for graph in all_graphs(model)
            for node in graph
            for index, value in enumerate(node.outputs)
            if _may_be_non_tensor(node, index, opset)
        }
        ShapeInferencePass(strict_mode=False, data_prop=True)(model)
        for value, (old_type, old_shape) in before.items():
            value.type, value.shape = old_type, old_shape
        return ir.passes.PassResult(model, modified=False)


def _may_be_non_tensor(node: ir.Node, index: int, opset: int) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return True
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return True
    if index >= len(schema.outputs):
        index = len(schema.outputs) - 1
    type_str = schema.outputs[index].type_str
    allowed = next((c.allowed_type_strs for c in schema.type_constraints
                    if c.type_param_str == type_str), [type_str])
    return any(not t.startswith("tensor(") for t in allowed)


@dataclasses.dataclass(frozen=True)
class FuseShapeOps(Pass):
    name = "fuse-shape-ops"

    def call(self, model: ir.Model) -> PassStats:
        result = run_wrapped(model, [TensorShapeInference(), rewrite_pass(shape_rules())])
        folded = sum(shape_symbols.fold_static_entries(g) for g in all_graphs(model))
        result.stats["static_shape_entries_folded"] = folded
        result.modified |= folded > 0
        return result
