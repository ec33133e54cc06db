"""``fold-constants``: evaluate every node whose inputs are all constant, and store the
result as an initializer. Exact: the value ONNX's reference evaluator (numpy) computes,
bit-identical to a runtime for integer, data-movement and IEEE arithmetic ops; for
transcendental float ops (Exp, Log, Tanh, Sigmoid, ...) numpy and a runtime's kernels may
differ by a few ulp (about 1e-7 of the output's scale).

Uses onnxscript's ``fold_constants`` (which evaluates with ``onnx.reference``, partially
evaluates Shape/Size on static or symbolic dims, and descends into subgraphs), then lifts
the folded Constant nodes into initializers.

Size cap, so folding never blows up the file: a result with more than
``max_output_elements`` elements is kept only when it is not larger than the constant
inputs it frees; a result from a constant of more than 1024 elements that another node still
reads is folded only up to 1024 elements (the ``Transpose`` of a tied embedding table, which
the LM head reads, would otherwise store the table twice); nodes reading an input larger
than ``max_input_elements`` are left alone.
``ConstantOfShape`` is folded only up to ``max_output_elements``; Quantize/DequantizeLinear
are never folded (they carry quantization parameters later passes read).

The cap is checked before a node is evaluated, not after: a 173-byte ``Expand`` to
[20000, 20000] took 3.2 GB to learn that its result was too big to keep. What a result
would hold is told by :func:`onnxpress.ir.sizes.result_elements`; a node whose result
would exceed the cap stays for the runtime to compute, and a note says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass
from onnxscript.optimizer import fold_constants

from onnxpress.ir.analysis import opset_version
from onnxpress.ir.edit import describe
from onnxpress.ir.sizes import result_elements
from onnxpress.passes.base import Pass, PassStats
from onnxpress.passes.cleanup._wrapped import run_wrapped

__all__ = ["FoldConstants"]

_NEVER_FOLD = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: onnxscript rewrites these into Split/Unsqueeze/Squeeze with axes as inputs, which only
#: exist from opset 13; below that we leave them to the runtime.
_AXES_AS_INPUTS_OPSET = 13
_SEQUENCE_REWRITES = frozenset({"ConcatFromSequence", "SplitToSequence"})
#: a domain no model imports: onnxscript's folder passes over a node of a domain the model
#: does not import, before any rewrite, and ``should_fold`` is asked only after its rewrites
_HELD_DOMAIN = "onnxpress.fold-constants.held"
#: the largest result folded from a constant that stays read elsewhere: shape arithmetic
#: is far smaller; a bigger one is a copy of weight data (a tied table's Transpose)
_SHARED_CAP = 1024


@dataclasses.dataclass(frozen=True)
class _OpsetAwareFolder(ir.passes.InPlacePass):
    shape_inference: bool
    input_size_limit: int
    output_size_limit: int
    should_fold: Callable[[ir.Node], bool | None]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        held = [node for node in _every_node(model) if _needs_axes_inputs(node, model)]
        for node in held:
            node.domain = _HELD_DOMAIN
        # the folder's inference erases the declared type of an op it has no schema for
        # (ai.onnx.preview.training's Gradient): a graph output without a type fails
        # onnx.checker, so what a node of another domain declared is kept
        declared = {value: value.type for node in _every_node(model)
                    if node.domain not in ("", "ai.onnx") for value in node.outputs
                    if value.type is not None}
        try:
            result = fold_constants(
                model,
                onnx_shape_inference=self.shape_inference,
                input_size_limit=self.input_size_limit,
                output_size_limit=self.output_size_limit,
                should_fold=self.should_fold,
            )
        finally:
            for node in held:
                node.domain = ""
            for value, declared_type in declared.items():
                if value.type is None:
                    value.type = declared_type
        return ir.passes.PassResult(model, modified=result.modified)


def _every_node(model: ir.Model) -> Iterator[ir.Node]:
    yield from model.graph.all_nodes()
    for function in model.functions.values():
        yield from function.all_nodes()


def _needs_axes_inputs(node: ir.Node, model: ir.Model) -> bool:
    # Function bodies too are judged by the model's opsets: that is what the folder uses.
    version = model.opset_imports.get(node.domain, _AXES_AS_INPUTS_OPSET)
    return (node.op_type in _SEQUENCE_REWRITES and node.domain == ""
            and version < _AXES_AS_INPUTS_OPSET)


@dataclasses.dataclass(frozen=True)
class FoldConstants(Pass):
    name = "fold-constants"
    visits_subgraphs = True
    max_output_elements: int = 1 << 16
    max_input_elements: int = 1 << 24
    shape_inference: bool = True

    def _should_fold(self, node: ir.Node, opset: int,
                     refused: dict[ir.Node, tuple[int, int]]) -> bool | None:
        if node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type in _NEVER_FOLD:
            return False
        count = result_elements(node, opset)
        if node.op_type == "ConstantOfShape":  # onnxscript never folds it: we do, up to the cap
            limit = self.max_output_elements
        else:  # onnxscript keeps a larger result only where it frees as many input elements
            freed, shared = _input_elements(node)
            cap = min(self.max_output_elements, _SHARED_CAP) if shared else \
                self.max_output_elements
            limit = max(cap, freed)
        if count is not None and count > limit:
            refused[node] = (count, limit)
            return False
        return True if node.op_type == "ConstantOfShape" and count is not None else None

    def call(self, model: ir.Model) -> PassStats:
        refused: dict[ir.Node, tuple[int, int]] = {}
        opset = opset_version(model) or 1
        folder = _OpsetAwareFolder(
            shape_inference=self.shape_inference,
            input_size_limit=self.max_input_elements,
            output_size_limit=self.max_output_elements,
            should_fold=lambda node: self._should_fold(node, opset, refused),
        )
        lift = LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)
        result = run_wrapped(model, [folder, lift])
        result.notes = [f"fold-constants: {describe(node)} left unfolded for the runtime: its "
                        f"result would have {count} elements (> {limit})"
                        for node, (count, limit) in refused.items()]
        result.stats["left_unfolded"] = len(refused)
        return result


def _input_elements(node: ir.Node) -> tuple[int, bool]:
    """(the constant input elements folding ``node`` frees: those no other node nor a graph
    output reads; whether a constant input above ``_SHARED_CAP`` elements is read
    elsewhere, so that a result computed from it would be a second copy of its data)."""
    freed, shared = 0, False
    for v in set(node.inputs):
        if v is None or v.const_value is None:
            continue
        if not v.is_graph_output() and all(user is node for user, _ in v.uses()):
            freed += v.const_value.size
        elif v.const_value.size > _SHARED_CAP:
            shared = True
    return freed, shared
