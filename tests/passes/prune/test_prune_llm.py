"""``prune`` on a LLaMA decoder (the tiny random one: hidden 64, 4 heads over 2 KV heads,
SwiGLU): Wanda's masks (unstructured per output row, and 2:4 along the reduction axis) are
numpy's from ``|W| * ||X_j||`` on activations ONNX Runtime computes on the original model,
with the estimated output error their definition gives; the tied LM head stays dense;
SwiGLU width pruning cuts gate/up rows and down columns together, and the least-squares
refit of the down projection leaves the output error its estimate says (ONNX Runtime on the
pruned model), below the unrefitted cut's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from tiny_llama import cleaned_tiny_llama

import onnxpress

pytest.importorskip("torch")  # the tiny model is exported from PyTorch
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    return cleaned_tiny_llama(tmp_path_factory.mktemp("tiny_llama_prune"), seed=1)


def _run(path_or_model, names: list[str], batches) -> dict[str, np.ndarray]:
    """Named values over all batches as rows [tokens, last axis] (ONNX Runtime)."""
    proto = (onnx.load(path_or_model) if isinstance(path_or_model, Path)
             else onnxpress.to_proto(path_or_model))
    present = {o.name for o in proto.graph.output}
    proto.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in present)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    runs = [session.run(names, b) for b in batches]
    return {n: np.concatenate([r[i].reshape(-1, r[i].shape[-1]) for r in runs]).astype(
        np.float64) for i, n in enumerate(names)}


def _linears(path: Path) -> dict[str, tuple[str, str, np.ndarray]]:
    """Decoder linear layers: node -> (input, weight name, weight [K, N])."""
    proto = onnx.load(path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.name: (n.input[0], n.input[1], inits[n.input[1]])
            for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits}


@pytest.mark.parametrize("structure", ["unstructured", "nm"])
def test_wanda_masks_and_error_estimate(tiny, structure: str) -> None:
    path, batches = tiny
    layers = _linears(path)
    x = _run(path, sorted({source for source, _, _ in layers.values()}), batches)
    spec = (f"prune(structure={structure},sparsity=0.3,importance=activation)")
    model, report = onnxpress.compile(path, spec, calibration=batches, return_report=True)
    stats = report.passes[-1].stats
    assert stats["layers_sparsified"] == 14  # the LM head shares the embedding: left dense
    assert any("weight also read by other nodes" in n for n in report.passes[-1].notes)
    errors = []
    for name, (source, weight_name, weight) in layers.items():
        score = np.abs(weight.astype(np.float64)) * np.linalg.norm(x[source], axis=0)[:, None]
        if structure == "nm":  # 2 of every 4 along K kept
            groups = score.T.reshape(score.shape[1], -1, 4)
            order = np.argsort(groups, axis=-1, kind="stable")
            keep = np.ones_like(groups, bool)
            np.put_along_axis(keep, order[..., :2], False, axis=-1)
            keep = keep.reshape(score.shape[1], -1).T
        else:  # round(0.3 K) smallest of each output column
            cut = int(np.floor(0.3 * len(score) + 0.5))
            threshold = np.sort(score, axis=0)[cut - 1]
            keep = score > threshold
        got = model.graph.initializers[weight_name].const_value.numpy()
        np.testing.assert_array_equal(got != 0, keep, err_msg=name)
        np.testing.assert_array_equal(got[keep], weight[keep])
        errors.append(np.sqrt((score[~keep] ** 2).sum() / (score**2).sum()))
    assert stats["estimated_error"]["max"] == pytest.approx(max(errors), rel=1e-4)
    assert stats["estimated_error"]["mean"] == pytest.approx(np.mean(errors), rel=1e-4)


def test_swiglu_width_refit_matches_its_error_estimate(tiny) -> None:
    """Layer 0's down projection sees the unpruned model's inputs restricted to the kept
    channels, so its refit error measured through ONNX Runtime is the estimate."""
    path, batches = tiny
    layers = _linears(path)
    spec = "prune(structure=mlp,ratio=0.25,importance=activation,refit={})"
    pruned, report = onnxpress.compile(path, spec.format("true"), calibration=batches,
                                       return_report=True)
    stats = report.passes[-1].stats
    assert stats["groups"] == 2 and stats["channels_removed"] == 2 * 32
    nodes = {n.name: n for n in pruned.graph}
    downs = sorted(stats["refit_error"]["layers"])
    for down in downs:
        assert nodes[down].inputs[1].const_value.numpy().shape == (96, 64)
        source = nodes[down].inputs[0].producer()
        assert source.op_type == "Mul"  # silu(gate) * up, both cut to 96 columns
        for value in source.inputs:
            assert value.shape is not None and value.shape.dims[-1] == 96
    first = downs[0]
    out = nodes[first].outputs[0].name
    want = _run(path, [out], batches)[out]
    refitted = _run(pruned, [out], batches)[out]
    plain = onnxpress.compile(path, spec.format("false"), calibration=batches)
    measured = np.linalg.norm(refitted - want) / np.linalg.norm(want)
    assert measured == pytest.approx(stats["refit_error"]["layers"][first], rel=2e-2)
    assert measured < np.linalg.norm(_run(plain, [out], batches)[out] - want) / np.linalg.norm(
        want)
    assert layers  # the decoder's linear layers were read from the same file
