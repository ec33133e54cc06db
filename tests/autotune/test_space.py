"""The search space read from the IR: the families each model offers, and pipelines that
compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import onnxpress
from onnxpress.autotune.space import plan
from onnxpress.backends.ort_runner import Runner
from onnxpress.models.datasets import load_dataset
from onnxpress.models.digits_data import CALIBRATION_NPZ

MODELS = Path(onnxpress.models.__file__).parent


def test_a_vit_offers_every_family_and_a_cnn_no_token_merging() -> None:
    vit = plan(MODELS / "digits_vit.onnx")
    assert vit.families() == ["tome", "prune", "lowrank", "heads", "quantize"]
    assert "MLP channel groups" in next(k.offer for k in vit.knobs if k.family == "prune")
    assert next(k.offer for k in vit.knobs if k.family == "heads") == (
        "24 attention heads in 6 fused blocks")
    cnn = plan(MODELS / "digits_cnn.onnx")
    assert "tome" not in cnn.families() and "prune" in cnn.families()
    assert any(note.startswith("tome: no transformer block") for note in cnn.notes)
    assert any(note.startswith("heads: no attention") for note in cnn.notes)


def test_settings_become_pipelines_off_values_drop_out() -> None:
    vit = plan(MODELS / "digits_vit.onnx")
    assert vit.pipeline({}) == "cleanup,fuse-for-ort"
    assert vit.pipeline({"tome": 0.7, "prune": 0.0, "lowrank": 0.8, "quantize": "int8"}) == (
        "cleanup,tome(keep=0.7),lowrank(params=0.8),int8")
    assert vit.pipeline({"prune": 0.2}) == (
        "cleanup,prune(structure=mlp,ratio=0.2),cleanup,fuse-for-ort")


def test_with_data_pruning_ranks_by_activation_and_heads_go_after_the_fusion() -> None:
    vit = plan(MODELS / "digits_vit.onnx", calibrated=True)
    assert vit.pipeline({"heads": 0.25, "prune": 0.2, "lowrank": 0.9, "tome": 0.8}) == (
        "cleanup,tome(keep=0.8),prune(structure=mlp,ratio=0.2,importance=activation),"
        "fuse-for-ort(attention_bias=false),prune(structure=head,ratio=0.25,"
        "importance=activation),lowrank(params=0.9),cleanup,fuse-for-ort")


def test_the_strongest_setting_of_every_family_compiles_and_runs(tmp_path: Path) -> None:
    source = MODELS / "digits_vit.onnx"
    space = plan(source, calibrated=True)
    strongest = space.pipeline({k.family: k.values[-1] for k in space.knobs})
    model = onnxpress.compile(source, strongest, calibration=str(CALIBRATION_NPZ))
    out = tmp_path / "strongest.onnx"
    onnxpress.save(model, out)
    data = load_dataset("digits")
    name = next(iter(data.inputs))
    logits = next(iter(Runner(str(out)).run({name: data.inputs[name][:64]}).values()))
    assert logits.shape == (64, 10) and np.isfinite(logits).all()
    # every family took part: the file is smaller than int8 alone would make it
    alone = onnxpress.compile(source, "int8", calibration=str(CALIBRATION_NPZ))
    onnxpress.save(alone, tmp_path / "int8.onnx")
    assert out.stat().st_size < (tmp_path / "int8.onnx").stat().st_size


def test_an_encoder_with_a_padding_mask_offers_mlp_pruning_without_token_merging(
        tmp_path: Path) -> None:
    """BERT-shaped, with an attention mask: tome finds no block to merge in (its token count
    is not static), but the MLP widths still shrink; the planner offers them."""
    from onnxpress.models.zoo import ZOO

    source = ZOO["bert_small"].export(tmp_path / "bert_small.onnx")
    space = plan(source)
    assert "tome" not in space.families()
    assert space.families()[:2] == ["prune", "lowrank"]
    assert "heads" in space.families()  # the attention shrinks by heads instead
    assert next(k.offer for k in space.knobs if k.family == "prune") == "4 MLP channel groups"
    model = onnxpress.compile(source, space.pipeline({"prune": 0.5}))
    widths = [n.inputs[1].shape[1] for n in model.graph if n.op_type in ("MatMul", "Gemm")
              and n.inputs[1] is not None and n.inputs[1].const_value is not None
              and n.inputs[1].shape is not None and n.inputs[1].shape[1] in (512, 1024)]
    assert widths and set(widths) == {512}  # hidden 256, MLP 1024 halved
