"""``lowrank`` on the trained digits models and ONNX's light models: exact at full rank,
the truncation numpy's SVD gives, activation-aware beating plain at the same size, rank
rules and budgets kept, layers that would not shrink left dense with a note, bad requests
refused. References: ONNX Runtime on the unfactored model, ``numpy.linalg.svd``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pass_checks import Within, check_pass

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.ir.analysis import constant_array
from onnxpress.models.digits_data import CALIBRATION_NPZ

MODELS = Path(onnxpress.models.__file__).parent
TEST = np.load(MODELS / "digits_test.npz")
LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"


def _run(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _lowrank(source, spec: str, calibration=CALIBRATION_NPZ):
    model, report = onnxpress.compile(source, f"cleanup,{spec}", calibration=calibration,
                                      return_report=True)
    return model, report.passes[-1]


def _error(reference: np.ndarray, logits: np.ndarray) -> float:
    return float(np.linalg.norm(logits - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("aware", ["true", "false"])
@pytest.mark.parametrize("name", ["digits_vit", "digits_cnn"])
def test_full_rank_is_exact(name, aware):
    cleaned = onnxpress.compile(MODELS / f"{name}.onnx", "cleanup")
    checked = check_pass(f"lowrank(ratio=1.0,min_saving=-1,min_elements=0,aware={aware})",
                         cleaned, {"image": TEST["image"]}, tolerance=Within(1e-5),
                         calibration=CALIBRATION_NPZ)
    stats = checked.stats("lowrank")
    assert stats["layers_factored"] == stats["layers"] >= 3
    kinds = {n.op_type for n in checked.model.graph if n.name.endswith("_lowrank")}
    assert kinds == ({"Conv", "Gemm"} if name == "digits_cnn" else {"Conv", "MatMul", "Gemm"})


def test_light_squeezenet_full_rank_is_exact():
    """1x1 and 3x3 Convs with pads, in a Caffe2-era export."""
    source = LIGHT / "light_squeezenet.onnx"
    feeds = {"data_0": np.random.default_rng(0).random((1, 3, 224, 224), np.float32)}
    base = onnxpress.compile(source, "cleanup")
    convs = sum(n.op_type == "Conv" and constant_array(n.inputs[1]) is not None
                for n in base.graph)
    reference = _run(base, feeds)
    model, record = _lowrank(source, "lowrank(ratio=1.0,min_saving=-1,min_elements=0)", None)
    assert record.stats["layers_factored"] == record.stats["layers"] == convs > 20
    # the five whose weights are graph inputs (overridable at run time) are named
    assert sum("not a constant" in n for n in record.notes) == 5
    np.testing.assert_allclose(_run(model, feeds), reference, rtol=0,
                               atol=1e-5 * np.abs(reference).max())


def test_plain_truncation_is_numpys():
    """Every factored layer's two weights multiply to numpy's rank-r SVD truncation."""
    base = onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup")
    weights = {n.name: constant_array(n.inputs[1]) for n in base.graph
               if n.op_type == "MatMul" and constant_array(n.inputs[1]) is not None}
    model, record = _lowrank(MODELS / "digits_vit.onnx", "lowrank(ratio=0.25,aware=false)")
    nodes = {n.name: n for n in model.graph}
    assert record.stats["layers_factored"] == 24
    for layer in record.stats["factored"]:
        node = nodes[layer["layer"]]
        first = nodes[f"{node.name}_lowrank"]
        product = constant_array(first.inputs[1]) @ constant_array(node.inputs[1])
        u, s, vt = np.linalg.svd(weights[node.name].astype(np.float64), full_matrices=False)
        r = layer["rank"]
        assert r == round(0.25 * len(s))
        np.testing.assert_allclose(product, (u[:, :r] * s[:r]) @ vt[:r], atol=1e-5)
        assert layer["error"] == pytest.approx(np.sqrt((s[r:] ** 2).sum() / (s**2).sum()))


def test_activation_aware_beats_plain_on_the_digits_vit():
    """Half of every layer's rank (square layers stay dense: nothing to save): about a
    third fewer linear weights; whitening by the calibration inputs keeps top-1 within a
    point and the logits several times closer to the unfactored model's."""
    feeds = {"image": TEST["image"]}
    reference = _run(onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup"), feeds)
    errors = {}
    for aware in ("true", "false"):
        model, record = _lowrank(MODELS / "digits_vit.onnx", f"lowrank(ratio=0.5,aware={aware})")
        stats = record.stats
        assert stats["weights_after"] <= 0.7 * stats["weights_before"]
        logits = _run(model, feeds)
        errors[aware] = _error(reference, logits)
        if aware == "true":
            accuracy = float((logits.argmax(1) == TEST["label"]).mean())
            assert accuracy >= float((reference.argmax(1) == TEST["label"]).mean()) - 0.01
    assert errors["true"] < 0.5 * errors["false"], errors


def test_layers_that_would_not_shrink_stay_dense_and_say_why():
    model, record = _lowrank(MODELS / "digits_vit.onnx", "lowrank(ratio=0.5)")
    kept = [n for n in record.notes if "kept dense" in n]
    # the 64x64 projections: rank 32 holds as many weights as the dense layer
    assert len(kept) == 6 and all("less than min_saving=10%" in n for n in kept)
    assert any("fewer than min_elements" in n for n in record.notes)


@pytest.mark.parametrize("rule,value", [("energy", 0.9), ("error", 0.2)])
def test_energy_and_error_rules_hold_per_layer(rule, value):
    model, record = _lowrank(MODELS / "digits_vit.onnx",
                             f"lowrank({rule}={value},min_saving=-1)")
    for layer in record.stats["factored"]:
        bound = np.sqrt(1 - value) if rule == "energy" else value
        assert layer["error"] <= bound + 1e-9
        assert layer["rank"] < layer["full"]


def test_parameter_budget_is_met_and_spread_unevenly():
    model, record = _lowrank(MODELS / "digits_vit.onnx", "lowrank(params=0.7)")
    stats = record.stats
    kept = stats["weights_after"] / stats["weights_before"]
    assert 0.6 < kept <= 0.7
    ratios = {round(f["rank"] / f["full"], 2) for f in stats["factored"]}
    assert len(ratios) > 3  # not one ratio everywhere


def test_measured_sensitivity_spends_the_budget_better():
    """``allocate=sensitivity`` (the default) weighs each layer's truncation error by how
    far it moves the model's outputs: at the same budget the logits stay closer."""
    feeds = {"image": TEST["image"]}
    reference = _run(onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup"), feeds)
    errors = {}
    for allocate in ("sensitivity", "tail"):
        model, record = _lowrank(MODELS / "digits_vit.onnx",
                                 f"lowrank(params=0.7,allocate={allocate})")
        assert record.stats["weights_after"] <= 0.7 * record.stats["weights_before"]
        errors[allocate] = _error(reference, _run(model, feeds))
    # digits ViT as first trained: 0.6x the tail's error; retrained on 1213 images: 0.9x
    assert errors["sensitivity"] < 0.95 * errors["tail"], errors


def test_sequential_refit_lowers_the_error_where_data_is_plentiful():
    """The digits ViT's calibration gives 8320 token rows for 64-256 features: refitting
    each layer to its inputs once earlier layers are factored pays off there."""
    feeds = {"image": TEST["image"]}
    reference = _run(onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup"), feeds)
    errors = [_error(reference, _run(_lowrank(MODELS / "digits_vit.onnx",
                                              f"lowrank(ratio=0.5,sequential={s})")[0], feeds))
              for s in ("false", "true")]
    assert errors[1] < 0.9 * errors[0], errors


def test_mlp_only():
    model, record = _lowrank(MODELS / "digits_vit.onnx", "lowrank(ratio=0.5,layers=mlp)")
    assert record.stats["layers"] == 12 == record.stats["layers_factored"]


@pytest.mark.parametrize("spec,message", [
    ("lowrank(ratio=0.5,energy=0.9)", "not ratio and energy"),
    ("lowrank(ratio=1.5)", "fraction"),
    ("lowrank(ops=Attention)", "'Attention' is not one of MatMul, Gemm, Conv"),
    ("lowrank(layers=heads)", "'heads' is not one of all, mlp"),
])
def test_bad_requests(spec, message):
    with pytest.raises(BadInputError, match=message):
        onnxpress.compile(MODELS / "digits_vit.onnx", spec)


def test_aware_needs_data_and_a_model_needs_layers():
    with pytest.raises(BadInputError, match="calibration"):
        onnxpress.compile(MODELS / "digits_vit.onnx", "lowrank(aware=true)")
    with pytest.raises(BadInputError, match="no MatMul/Gemm/Conv"):
        onnxpress.compile(MODELS / "digits_vit.onnx", "lowrank(ops=Gemm,min_elements=100000)")


def test_minilm_quarter_fewer_linear_weights_keeps_pair_similarities(minilm_path):
    """Activation-aware, sensitivity-spread, sequentially refitted on the calibration
    sentences (written apart from the evaluation set): 25% fewer weights in MiniLM's 36
    linear layers, Spearman of pair similarities >= 0.98 against the fp32 model."""
    from onnxpress.models.minilm import calibration_batches

    model, record = _lowrank(minilm_path, "lowrank(params=0.75)", calibration_batches())
    stats = record.stats
    assert stats["layers"] == 36 and stats["weights_after"] <= 0.75 * stats["weights_before"]
    assert onnxpress.evaluate(model, "minilm-texts").metrics["spearman"] >= 0.98


def test_an_export_without_intermediate_types_is_factored_and_saved():
    """The digits ViT as exported (no cleanup, intermediate values untyped): the factored
    layers' new values take the weight's type, so the model serializes, passes the checker
    and stays exact at full rank (it used to fail at save: a value typed Tensor(None))."""
    checked = check_pass("lowrank(ratio=1.0,min_saving=-1,min_elements=0,aware=false)",
                         MODELS / "digits_vit.onnx", {"image": TEST["image"][:16]},
                         tolerance=Within(1e-5))
    assert checked.stats("lowrank")["layers_factored"] >= 3
