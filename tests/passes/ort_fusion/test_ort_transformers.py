"""``ort-transformers``: ONNX Runtime's own transformer fusions as a pass. What it reports
is what the graph holds, the fused model computes what the original does (through ONNX
Runtime, float rounding apart), and a model it finds nothing in comes back unchanged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pass_checks import Within, assert_close

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.models.digits_data import CALIBRATION_NPZ

MODELS = Path(onnxpress.models.__file__).parent
FUSED_OPS = ("BiasGelu", "SkipLayerNormalization", "Attention", "EmbedLayerNormalization",
             "FastGelu", "Gelu")


def _fuse(source, spec: str = "ort-transformers"):
    model, report = onnxpress.compile(source, f"cleanup,{spec}", return_report=True)
    return onnxpress.to_proto(model), report.passes[-1]


def _run(model, feeds) -> dict[str, np.ndarray]:
    return Runner(model.SerializeToString() if hasattr(model, "graph") else str(model)).run(feeds)


def _assert_same_outputs(source, fused, feeds, tol: float = 1e-5) -> None:
    assert_close(_run(source, feeds), _run(fused, feeds), Within(tol))


def _ms_ops(proto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node if n.domain == "com.microsoft")


def _digits_feeds() -> dict[str, np.ndarray]:
    return {k: v[:16] for k, v in np.load(CALIBRATION_NPZ).items()}


def test_vit_fusions_are_reported_and_keep_the_outputs() -> None:
    source = MODELS / "digits_vit.onnx"  # 6 pre-norm blocks, image input: auto picks vit
    fused, record = _fuse(source)
    assert record.stats["model_type"] == "vit"
    ops = _ms_ops(fused)
    assert ops["BiasGelu"] == record.stats["BiasGelu"] == 6
    assert ops["SkipLayerNormalization"] == record.stats["SkipLayerNormalization"] > 0
    assert {n.domain for n in fused.graph.node} <= {o.domain for o in fused.opset_import}
    _assert_same_outputs(source, fused, _digits_feeds())


def test_bert_fusions_on_real_minilm(minilm_path) -> None:
    from onnxpress.models.minilm import EXAMPLE_SENTENCES, tokenize

    fused, record = _fuse(minilm_path)
    assert record.stats["model_type"] == "bert"  # token-id inputs
    ops = _ms_ops(fused)
    for op in FUSED_OPS:
        assert ops[op] == record.stats.get(op, 0), op
    assert ops["BiasGelu"] == 6  # one per layer
    _assert_same_outputs(minilm_path, fused, tokenize(list(EXAMPLE_SENTENCES)))


def test_a_model_with_nothing_to_fuse_is_left_alone() -> None:
    source = MODELS / "digits_cnn.onnx"
    before = onnxpress.to_proto(onnxpress.compile(source, "cleanup"))
    fused, record = _fuse(source)
    assert not record.modified
    assert any("found nothing to fuse" in note for note in record.notes)
    assert [n.op_type for n in fused.graph.node] == [n.op_type for n in before.graph.node]
    _assert_same_outputs(before, fused, _digits_feeds(), tol=0.0)


def test_an_unknown_model_type_is_refused() -> None:
    with pytest.raises(BadInputError, match="'llama' is not one of auto, bert, vit"):
        _fuse(MODELS / "digits_cnn.onnx", "ort-transformers(model_type=llama)")
