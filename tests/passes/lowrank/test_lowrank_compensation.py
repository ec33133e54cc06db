"""``lowrank(compensate=PIPELINE,rank=R)``: a low-rank branch per layer fitted to the weight
error another pass leaves (EoRA-style). At full rank the branch restores the float model
(ONNX Runtime on the original is the reference); at low rank it shrinks the error of int4
weight-only and of 2:4 sparsity; on MiniLM it recovers at least half of int4's Spearman gap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxpress
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ

MODELS = Path(onnxpress.models.__file__).parent
IMAGES = np.load(MODELS / "digits_test.npz")["image"]
# round to nearest: the error the branches are measured against (weight-only's default,
# awq-gptq with data, leaves far less of it)
INT4 = "weight-only(bits=4,block_size=32,min_elements=0,method=rtn{f})"


def _logits(model) -> np.ndarray:
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto)
    options = ort.SessionOptions()
    # ORT would fuse DequantizeLinear(int4) -> MatMul into a MatMulNBits with int8
    # activations (~0.5% error of its own); keep the activations float
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"image": IMAGES})[0]


def _error(reference: np.ndarray, model) -> float:
    return float(np.linalg.norm(_logits(model) - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return _logits(onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup"))


@pytest.mark.parametrize("layout", ["", ",format=matmulnbits"])
def test_full_rank_branch_restores_the_float_model(reference, layout):
    """Rank 256 >= every layer's rank: W_q + B A = W, whatever int4 layout the runtime
    reads (blocked DequantizeLinear, or MatMulNBits read back by probing)."""
    pipeline = INT4.format(f=layout)
    quantized = onnxpress.compile(MODELS / "digits_vit.onnx", f"cleanup,{pipeline}")
    model, report = onnxpress.compile(
        MODELS / "digits_vit.onnx",
        f"cleanup,lowrank(compensate='{pipeline}',rank=256,min_elements=0)",
        calibration=CALIBRATION_NPZ, return_report=True)
    stats = report.passes[-1].stats
    assert stats["branches"] == 24 + 1  # every MatMul, and the Gemm head
    assert _error(reference, quantized) > 1e-3
    assert _error(reference, model) < 2e-5


@pytest.mark.parametrize("pipeline", [INT4.format(f=""), "prune(structure=nm)"])
def test_low_rank_branch_shrinks_the_error(reference, pipeline):
    plain = onnxpress.compile(MODELS / "digits_vit.onnx", f"cleanup,{pipeline}",
                              calibration=CALIBRATION_NPZ)
    model, report = onnxpress.compile(
        MODELS / "digits_vit.onnx", f"cleanup,lowrank(compensate='{pipeline}',rank=8)",
        calibration=CALIBRATION_NPZ, return_report=True)
    layers = report.passes[-1].stats["layers"]
    assert layers and all(f["error_after"] < f["error_before"] for f in layers)
    assert _error(reference, model) < 0.6 * _error(reference, plain)


def test_bad_compensation_requests():
    with pytest.raises(BadInputError, match="cannot hold lowrank"):
        onnxpress.compile(MODELS / "digits_vit.onnx",
                          "lowrank(compensate='lowrank(ratio=0.5)',aware=false)")
    with pytest.raises(BadInputError, match="branch's size is rank"):
        onnxpress.compile(MODELS / "digits_vit.onnx",
                          "lowrank(compensate='weight-only',ratio=0.5)")


def test_minilm_int4_branch_recovers_half_the_spearman_gap(minilm_path):
    """int4 weight-only (blocks of 128) on MiniLM, and the same with rank-32 branches
    fitted in the calibration inputs' eigenspace (60 of the text set's sentences)."""
    from onnxpress.models.minilm import tokenize

    texts = json.loads((MODELS / "minilm_texts.json").read_text())["sentences"][::5]
    calibration = [tokenize([t["text"]]) for t in texts]
    int4 = "weight-only(bits=4,block_size=128,method=rtn)"
    spearman = {}
    for name, spec in (("int4", int4), ("branch", f"lowrank(compensate='{int4}',rank=32)")):
        model = onnxpress.compile(minilm_path, f"cleanup,{spec}", calibration=calibration)
        spearman[name] = onnxpress.evaluate(model, "minilm-texts").metrics["spearman"]
    gap, left = 1 - spearman["int4"], 1 - spearman["branch"]
    assert gap > 0.005 and left <= 0.5 * gap, spearman
