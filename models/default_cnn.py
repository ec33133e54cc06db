"""The embedded default model: a small untrained CNN for 8x8 single-channel images (the
shape of scikit-learn's digits), written the way exporters write models, with the
redundancy cleanup removes: BatchNormalization after each Conv, an inference Dropout, an
Identity, and a dynamic ``Shape -> Gather -> Concat -> Reshape`` flatten.

Run ``python -m onnxpress.models.default_cnn`` to regenerate ``default_cnn.onnx``
(deterministic: fixed seed, so the bytes are reproducible).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PATH = Path(__file__).with_name("default_cnn.onnx")


def _conv_bn(rng, nodes, inits, x: str, c_in: int, c_out: int, tag: str) -> str:
    weights = {
        f"{tag}.w": rng.standard_normal((c_out, c_in, 3, 3)) * (2 / (9 * c_in)) ** 0.5,
        f"{tag}.b": rng.standard_normal(c_out) * 0.1,
        f"{tag}.gamma": 1 + 0.1 * rng.standard_normal(c_out),
        f"{tag}.beta": 0.1 * rng.standard_normal(c_out),
        f"{tag}.mean": 0.1 * rng.standard_normal(c_out),
        f"{tag}.var": 1 + 0.1 * rng.random(c_out),
    }
    inits += [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes.append(helper.make_node("Conv", [x, f"{tag}.w", f"{tag}.b"], [f"{tag}.conv"],
                                  pads=[1, 1, 1, 1], name=f"{tag}.conv"))
    nodes.append(helper.make_node(
        "BatchNormalization",
        [f"{tag}.conv", f"{tag}.gamma", f"{tag}.beta", f"{tag}.mean", f"{tag}.var"],
        [f"{tag}.bn"], name=f"{tag}.bn"))
    nodes.append(helper.make_node("Relu", [f"{tag}.bn"], [f"{tag}.relu"], name=f"{tag}.relu"))
    return f"{tag}.relu"


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    x = _conv_bn(rng, nodes, inits, "image", 1, 16, "block1")
    x = _conv_bn(rng, nodes, inits, x, 16, 32, "block2")
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array((rng.standard_normal((32, 10)) * 0.2).astype(np.float32), "fc.w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc.b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
        helper.make_node("Shape", ["pooled"], ["pooled_shape"], name="shape"),
        helper.make_node("Gather", ["pooled_shape", "zero"], ["batch"], axis=0, name="batch"),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], axis=0, name="cat"),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Dropout", ["flat"], ["dropped"], name="dropout"),
        helper.make_node("Identity", ["dropped"], ["features"], name="identity"),
        helper.make_node("MatMul", ["features", "fc.w"], ["fc.mm"], name="fc.matmul"),
        helper.make_node("Add", ["fc.mm", "fc.b"], ["logits"], name="fc.add"),
    ]
    graph = helper.make_graph(
        nodes, "default_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnxpress.models.default_cnn")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    onnx.save(build(), PATH)
    print(f"wrote {PATH}")
