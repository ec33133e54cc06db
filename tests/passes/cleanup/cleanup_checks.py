"""Cleanup's use of the shared three-part check (:mod:`pass_checks`) on random and targeted
graphs: bit-identical (NaN-aware) for the lossless passes, within 1e-5 relative for
``fold-batchnorm`` and ``cleanup``, with a cache of reference outputs (hypothesis replays
the same graphs). Plus small model-building helpers."""


import numpy as np
import onnx
import pass_checks
from onnx import TensorProto, helper, numpy_helper
from random_graphs import ABS_TOL, INPUT_SHAPE, IR_VERSION, LOSSLESS, OPSET, REL_TOL

import onnxpress
from onnxpress.passes.pipeline import parse_pipeline

# --------------------------------------------------------------------------- helpers


def run_ort(model, feeds) -> dict[str, np.ndarray]:
    return pass_checks.run_ort(model, feeds)


def feeds_for(proto: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {i.name for i in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


_REFERENCE: dict[tuple[bytes, int], dict[str, np.ndarray]] = {}


def reference_outputs(proto: onnx.ModelProto, seed: int, feeds) -> dict[str, np.ndarray]:
    key = (proto.SerializeToString(deterministic=True), seed)
    if key not in _REFERENCE:
        if len(_REFERENCE) > 256:
            _REFERENCE.clear()
        _REFERENCE[key] = run_ort(key[0], feeds)
    return _REFERENCE[key]


def assert_outputs_match(expected, actual, exact: bool) -> None:
    pass_checks.assert_close(expected, actual, pass_checks.EXACT if exact
                             else pass_checks.Within(REL_TOL, ABS_TOL))


def run_pass(pass_name: str, proto: onnx.ModelProto):
    """Load, run the pass, verify; return the IR model and its proto (checked)."""
    model = onnxpress.load(proto)
    (pass_,) = parse_pipeline(pass_name)
    result = pass_(model)
    assert result.model is model
    return model, pass_checks.checked_proto(model)


def check_pass(pass_name: str, proto: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    feeds = feeds_for(proto, seed)
    expected = reference_outputs(proto, seed, feeds)
    _, out = run_pass(pass_name, proto)
    assert_outputs_match(expected, run_ort(out.SerializeToString(), feeds),
                         exact=pass_name in LOSSLESS)
    return out


# --------------------------------------------------------------------------- targeted

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, INPUT_SHAPE)


def make_model(nodes, outputs, initializers=(), inputs=(X,)) -> onnx.ModelProto:
    outs = [o if isinstance(o, onnx.ValueInfoProto)
            else helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", list(inputs), outs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def typed(name, shape=INPUT_SHAPE):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def op_types(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def check_exact(pass_name, proto, seed=0):
    return check_pass(pass_name, proto, seed)


