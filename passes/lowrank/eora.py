"""Low-rank compensation of another pass's weight error (EoRA-style):
``lowrank(compensate='weight-only(bits=4)',rank=32)``.

Every eligible layer's float weight ``W`` is kept, the named pipeline runs on the model,
and what each layer now computes, ``W_q``, is read back: directly when its weight is still
a constant of the same shape (``prune(structure=unstructured|nm)``), otherwise by running
the layer alone in ONNX Runtime on the identity (so ``MatMulNBits`` or a blocked
DequantizeLinear count exactly as the runtime computes them). The error ``W - W_q`` then
gets a parallel branch ``x -> (x A^T) B^T`` of rank ``rank``, the truncation of the error in
the eigenspace of the layer's calibration inputs (:func:`.factor.decompose` with ``H``,
the SVD-LLM whitening; EoRA's projection is the same minimiser of ``E||(W - W_q - B A) x||``)
or of the error itself without data. Layers the pipeline replaced by something that is not
a single linear map of the same input are left as they are, with a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array
from onnxpress.ir.layers import as_matrix
from onnxpress.passes.base import Pass
from onnxpress.passes.lowrank import rewrite
from onnxpress.passes.lowrank.factor import decompose
from onnxpress.passes.lowrank.sites import Site


def _keeping_inputs(step: Pass) -> Pass:
    """``step``, made to leave each layer a linear map of its own input: weight-only's
    activation-aware scaling divides the input before the layer, which no branch on that
    input can follow, so its ``auto`` becomes ``gptq`` (``clip`` without data) here and an
    explicit ``awq`` is refused; its default int8 activations for 8-bit MatMulNBits become
    float ones, the weights being what the branch corrects."""
    method = getattr(step, "method", None)
    if step.name != "weight-only" or method is None:
        return step
    if method in ("awq", "awq-gptq"):
        raise BadInputError(f"lowrank(compensate=...): weight-only(method={method}) scales the "
                            "layers' inputs, which a branch cannot follow; use method=gptq, "
                            "clip or rtn")
    changes: dict[str, Any] = {}
    if method == "auto":
        changes["method"] = "gptq" if getattr(step, "data", None) is not None else "clip"
    if getattr(step, "accuracy_level", 0) == -1:  # int8 activations: an error no branch fixes
        changes["accuracy_level"] = 0
    return dataclasses.replace(step, **changes) if changes else step


def compensate(model: ir.Model, found: Sequence[Site], inner: Sequence[Pass], rank: int,
               damp: float, notes: list[str]) -> dict[str, Any]:
    """Run ``inner`` (built and given its data by the manager), then add a branch per layer
    of ``found`` fitted to the weight error it left."""
    if any(p.name == "lowrank" for p in inner):
        raise BadInputError("lowrank(compensate=...): the pipeline cannot hold lowrank itself")
    inner = [_keeping_inputs(p) for p in inner]
    pipeline = ",".join(p.spec() for p in inner)
    # names, not values: a pass may replace the layer's node and detach the old one
    kept = [(s, (s.node.inputs[0].name, s.node.outputs[0].name), s.matrix, s.statistics())
            for s in found]
    for step in inner:
        result = step(model)
        notes.extend(f"{step.name}: {note}" for note in getattr(result, "notes", [])[:5])
    producers = {out.name: node for node in model.graph for out in node.outputs}
    layers = []
    for site, (source, name), matrix, gram in kept:
        node = producers.get(name)
        now = None if node is None else _effective(model, node, site, source, matrix.shape)
        if now is None:
            notes.append(f"{site.label}: not a linear map of its input after {pipeline}; "
                         "no branch")
            continue
        error = matrix - now
        scale = _norm(matrix, gram)
        before = _norm(error, gram) / scale
        if before == 0:
            continue  # the pipeline left this layer exact
        spectrum = decompose(error, gram, damp)
        r = min(rank, len(spectrum.values))
        rewrite.branch(model.graph, node, site.stored, *spectrum.factors(r))
        layers.append({"layer": site.node.name, "rank": r, "weights": r * sum(site.shape),
                       "error_before": before,
                       "error_after": before * float(np.sqrt(spectrum.energy[r]))})
    return {"branches": len(layers), "rank": rank, "pipeline": pipeline,
            "branch_weights": sum(f["weights"] for f in layers), "layers": layers}


def _norm(matrix: np.ndarray, gram: np.ndarray | None) -> float:
    """``sqrt(E||M x||^2)`` with ``H``, else the Frobenius norm."""
    if gram is None:
        return float(np.linalg.norm(matrix))
    return float(np.sqrt(max(np.einsum("of,fg,og->", matrix, gram, matrix), 0.0)))


def _effective(model: ir.Model, node: ir.Node, site: Site, source: str,
               shape: tuple[int, int]) -> np.ndarray | None:
    """What ``node`` now multiplies its input by, as ``[outputs, features]``."""
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if node.op_type == site.node.op_type and weight is not None \
            and weight.shape == site.dims:
        return np.asarray(as_matrix(node, weight), np.float64)
    if len(site.dims) != 2 or node.inputs[0] is None or node.inputs[0].name != source:
        return None
    probe = _probe(model, node, shape[1])
    if probe is None:
        return None
    runner = Runner(probe, optimize=False)
    eye = np.eye(shape[1], dtype=np.float32)
    lead = (1,) * (len(node.inputs[0].shape or [0, 0]) - 2)
    outputs = [next(iter(runner.run({"x": x.reshape(*lead, *x.shape)}).values()))
               for x in (eye, np.zeros_like(eye))]
    result = (outputs[0] - outputs[1]).reshape(shape[1], -1).T.astype(np.float64)
    return result if result.shape == shape else None


def _probe(model: ir.Model, node: ir.Node, features: int) -> bytes | None:
    """``node`` alone, with the constant-only nodes computing its other inputs, as a model
    of one input ``x``; None when an input is neither ``x`` nor constant."""
    nodes, initializers, seen = [], {}, set()

    def visit(value: ir.Value | None) -> bool:
        if value is None or value.name in seen:
            return True
        seen.add(value.name)
        if value.const_value is not None:
            initializers[value.name] = ir.serde.serialize_tensor(value.const_value)
            return True
        producer = value.producer()
        if producer is None or not all(visit(v) for v in producer.inputs):
            return False
        nodes.append(producer)
        return True

    if not all(visit(v) for v in node.inputs[1:]):
        return None
    rank = len(node.inputs[0].shape or [0, 0])
    graph = onnx.helper.make_graph(
        [ir.serde.serialize_node(n) for n in [*nodes, node]], "probe",
        [onnx.helper.make_tensor_value_info(node.inputs[0].name, onnx.TensorProto.FLOAT,
                                            [1] * (rank - 2) + [features, features])],
        [onnx.helper.make_tensor_value_info(node.outputs[0].name, onnx.TensorProto.FLOAT,
                                            None)],
        list(initializers.values()))
    opsets = [onnx.helper.make_opsetid(domain, version)
              for domain, version in model.opset_imports.items()]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
    # the probe's input is fed as "x"
    proto.graph.input[0].name = "x"
    for n in proto.graph.node:
        n.input[:] = ["x" if i == node.inputs[0].name else i for i in n.input]
    return proto.SerializeToString()
