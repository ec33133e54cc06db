"""Is a compiled model valid: does onnx.checker accept it, does ONNX Runtime load it.

The manager asks this of the input model first and holds the output only to the validators
the input passed: an exporter's file that the checker rejects, or that needs ops this ONNX
Runtime lacks, is not blamed on a pass; anything else the output fails is a bug of ours,
and the manager names the pass. The opset upgrade asks it of a converted model too.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from onnxpress.backends.onnx_writer import PROTOBUF_LIMIT, to_proto
from onnxpress.backends.ort_runner import first_line, inference_session, materialized
from onnxpress.ir.analysis import parameter_bytes

CHECKER = "onnx.checker"
RUNTIME = "ONNX Runtime"
VALIDATORS = (CHECKER, RUNTIME)


def checkable(model: ir.Model) -> bool:
    """Models over half the protobuf limit are not serialized in memory to be checked."""
    return parameter_bytes(model) < PROTOBUF_LIMIT // 2


def problems(model: ir.Model, validators: tuple[str, ...] = VALIDATORS) -> dict[str, str]:
    """Validator -> the first line of its complaint, for those that reject ``model``: as it
    will be written, from bytes, or through a temporary file where the weights are large
    (SmolLM2-135M's 540 MB as a proto and its bytes beside the IR took compile to 4.6 GB)."""
    found = {}
    with materialized(model) as source:
        if CHECKER in validators:
            try:
                onnx.checker.check_model(source)
            except Exception as error:  # the checker raises ValidationError and others
                found[CHECKER] = first_line(error)
        if RUNTIME in validators:
            try:
                inference_session(source, _load_only, precise=False)
            except Exception as error:  # ORT raises its own classes for every load failure
                found[RUNTIME] = first_line(error)
    return found


def _load_only(options) -> None:
    """Graph optimizations off: loading still resolves every kernel and infers every type,
    which is what a broken output fails; optimizing it would only cost time."""
    import onnxruntime as ort

    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def inference_error(model: ir.Model) -> str | None:
    """ONNX's strict type and shape inference's complaint about ``model``, if any: a Relu
    on strings, a MatMul of incompatible shapes. Ops without a schema (custom domains) pass;
    no values are propagated, so nothing is materialised."""
    try:
        onnx.shape_inference.infer_shapes(to_proto(model), check_type=True, strict_mode=True)
    except Exception as error:  # noqa: BLE001 - InferenceError, or C++ errors on malformed nodes
        return " ".join(str(error).split()) or type(error).__name__
    return None
