"""``lowrank`` on a LLaMA decoder (the tiny random one: hidden 64, 4 heads over 2 KV heads,
SwiGLU): the whitened truncation is SVD-LLM's, ``W_r = U_r S_r V_r^T L^-1`` with ``L`` the
Cholesky factor of the damped input Gram (numpy on activations ONNX Runtime computes on the
original model); whitened beats plain on every layer's output error at the same rank; the
statistics come from one streaming run (one Gram per distinct layer input, no session per
layer group past ``SEQUENTIAL_GROUPS``); a heavy truncation is flagged in the notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from tiny_llama import cleaned_tiny_llama

import onnxpress
from onnxpress.passes.lowrank import lowrank as lowrank_module
from onnxpress.passes.lowrank import sites

pytest.importorskip("torch")  # the tiny model is exported from PyTorch
pytest.importorskip("transformers")

DAMP = 1e-2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    return cleaned_tiny_llama(tmp_path_factory.mktemp("tiny_llama_lowrank"), seed=0)


def _layers(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Decoder linear layers: node name -> (input name, weight as [outputs, features])."""
    proto = onnx.load(path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.name: (n.input[0], inits[n.input[1]].T.astype(np.float64))
            for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in inits}


def _activations(path: Path, names: list[str], batches) -> dict[str, np.ndarray]:
    """Each named value over all batches as rows [tokens, features] (ONNX Runtime)."""
    proto = onnx.load(path)
    proto.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    runs = [session.run(names, b) for b in batches]
    return {n: np.concatenate([r[i].reshape(-1, r[i].shape[-1]) for r in runs]).astype(
        np.float64) for i, n in enumerate(names)}


def _factored(model: onnxpress.ir.Model, name: str) -> np.ndarray:
    """The factored layer's ``B A`` as [outputs, features]."""
    inits = model.graph.initializers
    a = inits[f"{name}_lowrank_a"].const_value.numpy()  # [features, rank]
    b = inits[f"{name}_lowrank_b"].const_value.numpy()  # [rank, outputs]
    return (a.astype(np.float64) @ b.astype(np.float64)).T


def test_whitened_truncation_is_svd_llms(tiny) -> None:
    path, batches = tiny
    layers = _layers(path)
    model, report = onnxpress.compile(
        path, "lowrank(ratio=0.25,aware=true,sequential=false,min_elements=0)",
        calibration=batches, return_report=True)
    factored = report.passes[-1].stats["factored"]
    assert len(factored) == 14  # 2 x (q, k, v, o, gate, up, down); the tied head is left
    x = _activations(path, sorted({layers[f["layer"]][0] for f in factored}), batches)
    for record in factored:
        source, weight = layers[record["layer"]]
        gram = x[source].T @ x[source] / len(x[source])
        gram += DAMP * np.mean(np.diag(gram)) * np.eye(len(gram))
        lower = np.linalg.cholesky(gram)
        u, s, vt = np.linalg.svd(weight @ lower, full_matrices=False)
        r = record["rank"]
        want = (u[:, :r] * s[:r]) @ np.linalg.solve(lower.T, vt[:r].T).T
        got = _factored(model, record["layer"])
        assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want), record
        assert record["error"] == pytest.approx(np.sqrt((s[r:] ** 2).sum() / (s**2).sum()),
                                                rel=1e-3)


def test_whitened_beats_plain_on_every_layers_output(tiny) -> None:
    path, batches = tiny
    layers = _layers(path)
    x = _activations(path, sorted({source for source, _ in layers.values()}), batches)
    errors = {}
    for aware in ("true", "false"):
        spec = f"lowrank(ratio=0.25,aware={aware},sequential=false,min_elements=0)"
        model = onnxpress.compile(path, spec, calibration=batches)
        errors[aware] = {}
        for name, (source, weight) in layers.items():
            if f"{name}_lowrank_a" in model.graph.initializers:
                lost = x[source] @ (weight - _factored(model, name)).T
                errors[aware][name] = np.linalg.norm(lost) / np.linalg.norm(x[source] @ weight.T)
    assert errors["true"].keys() == errors["false"].keys() and len(errors["true"]) == 14
    for name, error in errors["true"].items():
        assert error < errors["false"][name], name


def test_one_streaming_run_past_the_sequential_limit(tiny, monkeypatch) -> None:
    """The q/k/v and gate/up readers share one Gram: 8 for 14 layers; past
    ``SEQUENTIAL_GROUPS`` distinct inputs the default fit is one-shot (no session per group,
    said in a note) and equals ``sequential=false``."""
    path, batches = tiny
    model = onnxpress.load(path)
    found, _ = sites.find(model.graph, {"MatMul"}, set(), False, 0)
    sinks = sites.share(found)
    assert len(found) == 14 and sum(map(len, sinks.values())) == 8
    assert len({id(s.moments) for s in found}) == 8

    def refuse(*_, **__):
        raise AssertionError("the sequential refit ran")

    monkeypatch.setattr(lowrank_module, "SEQUENTIAL_GROUPS", 4)
    monkeypatch.setattr(lowrank_module, "factor_in_order", refuse)
    default, report = onnxpress.compile(path, "lowrank(params=0.8,allocate=tail)",
                                        calibration=batches, return_report=True)
    record = report.passes[-1]
    assert record.stats["sequential"] is False and record.stats["aware"] is True
    assert any("more than 4 for a sequential refit" in n for n in record.notes)
    oneshot = onnxpress.compile(path, "lowrank(params=0.8,allocate=tail,sequential=false)",
                                calibration=batches)
    names = [v for v in default.graph.initializers if "_lowrank_" in v]
    assert names and names == [v for v in oneshot.graph.initializers if "_lowrank_" in v]
    for name in names:
        np.testing.assert_array_equal(default.graph.initializers[name].const_value.numpy(),
                                      oneshot.graph.initializers[name].const_value.numpy())


def test_a_heavy_truncation_is_flagged(tiny) -> None:
    path, batches = tiny
    _, report = onnxpress.compile(path, "lowrank(rank=1,sequential=false)",
                                  calibration=batches, return_report=True)
    record = report.passes[-1]
    worst = max(f["error"] for f in record.stats["factored"])
    assert worst > lowrank_module.ERROR_WARNING
    assert any("expect the model's quality to drop" in n and f"{worst:.2f}" in n
               for n in record.notes), record.notes
    _, mild = onnxpress.compile(path, "lowrank(ratio=0.9,min_saving=-1,sequential=false)",
                                calibration=batches, return_report=True)
    assert not any("expect" in n for n in mild.passes[-1].notes)
