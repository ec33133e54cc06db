"""``evaluate`` for encoders: metrics against independent computations, the shipped
``minilm-texts`` set against the real all-MiniLM-L6-v2 export, and the CLI's last line."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxpress
from onnxpress.cli import main
from onnxpress.embedding_metrics import average_ranks, encoder_metrics, spearman
from onnxpress.errors import BadInputError
from onnxpress.models.build_minilm_texts import TEXTS_NPZ, read_text_set
from onnxpress.models.datasets import Dataset, load_dataset

# Unit vectors at these angles (degrees): three tight clusters of two, far apart; all 15
# pairwise gaps differ (by 1 degree or more), so no two cosines tie.
ANGLES = np.array([0, 10, 90, 103, 200, 214])


def _unit(angles: np.ndarray) -> np.ndarray:
    radians = np.deg2rad(angles)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def _identity_model(rank: int = 2, *, mask_input: bool = False) -> bytes:
    """``output = embedding``; with ``mask_input``, an ``attention_mask`` input it ignores."""
    dims = ["n", "s", "d"] if rank == 3 else ["n", "d"]
    inputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, dims)]
    if mask_input:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                    ["n", "s"]))
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Identity", ["embedding"], ["output"])],
                              "identity", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _ranks_by_counting(x: np.ndarray) -> np.ndarray:
    """Average ranks the slow way: 1 + #smaller + (#equal - 1) / 2."""
    return np.array([1 + (x < v).sum() + ((x == v).sum() - 1) / 2 for v in x])


def _spearman_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks_by_counting(a), _ranks_by_counting(b))[0, 1])


def _nearest_by_loops(e: np.ndarray) -> list[int]:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return [max((j for j in range(len(e)) if j != i), key=lambda j: float(e[i] @ e[j]))
            for i in range(len(e))]


def test_spearman_with_ties_matches_a_hand_computation() -> None:
    # ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4]: sum d_a d_b = 4.5, sum d_a^2 = 4.5,
    # sum d_b^2 = 5, so rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert average_ranks(np.array([1.0, 2, 2, 3])).tolist() == [1, 2.5, 2.5, 4]
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 3, 2, 4])) == pytest.approx(
        np.sqrt(0.9), abs=1e-12)
    assert average_ranks(np.array([10, 20, 20, 20, 5])).tolist() == [2, 4, 4, 4, 1]
    x = np.array([0.3, -1.0, 2.0, 0.5])
    assert spearman(x, x**3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(4), x))


def test_spearman_matches_counting_ranks() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 200).astype(float)  # many ties
    b = a + rng.integers(0, 4, 200)
    assert spearman(a, b) == pytest.approx(_spearman_by_hand(a, b), abs=1e-12)


def test_identity_scores_one_and_a_permutation_scores_what_is_known(tmp_path: Path) -> None:
    reference = _unit(ANGLES)
    path = tmp_path / "enc.npz"
    np.savez(path, embedding=reference, reference=reference)
    same = onnxpress.evaluate(_identity_model(), path, batch_size=4)
    assert same.metric == "retrieval_agreement" and same.samples == 6
    assert same.metrics == pytest.approx(
        {"spearman": 1.0, "retrieval_agreement": 1.0, "mean_cosine": 1.0}, abs=1e-7)

    # samples 1 and 2 swap places: 0 and 3 now find them, 4 and 5 are untouched
    swapped = reference[[0, 2, 1, 3, 4, 5]]
    np.savez(path, embedding=swapped, reference=reference)
    result = onnxpress.evaluate(_identity_model(), path, batch_size=4)
    # reference neighbours 1 0 3 2 5 4; model neighbours 2 3 0 1 5 4: two of six agree
    assert _nearest_by_loops(reference) == [1, 0, 3, 2, 5, 4]
    assert _nearest_by_loops(swapped) == [2, 3, 0, 1, 5, 4]
    assert result.value == pytest.approx(2 / 6, abs=1e-12)
    i, j = np.array(list(itertools.combinations(range(6), 2))).T
    cosines = lambda angles: np.cos(np.deg2rad(angles[i] - angles[j]))  # noqa: E731
    assert result.metrics["spearman"] == pytest.approx(
        _spearman_by_hand(cosines(ANGLES[[0, 2, 1, 3, 4, 5]]), cosines(ANGLES)), abs=1e-12)
    # rows 1 and 2 are 80 degrees off, the other four exact
    assert result.metrics["mean_cosine"] == pytest.approx(
        (4 + 2 * np.cos(np.deg2rad(80))) / 6, abs=1e-6)
    assert result.metrics["spearman"] < 1


def test_pairs_restrict_spearman_and_token_states_are_mean_pooled(tmp_path: Path) -> None:
    reference = _unit(ANGLES)
    rng = np.random.default_rng(1)
    model = reference + rng.normal(0, 0.3, reference.shape).astype(np.float32)
    # tokens: [2 * embedding, 0, junk]; the mask keeps the first two, whose mean is the embedding
    tokens = np.stack([2 * model, np.zeros_like(model), rng.normal(0, 9, model.shape)], axis=1)
    mask = np.array([[1, 1, 0]] * 6, dtype=np.int64)
    pairs = np.array([[0, 1], [0, 2], [3, 5], [2, 4], [1, 5]], dtype=np.int64)
    path = tmp_path / "tokens.npz"
    np.savez(path, embedding=tokens.astype(np.float32), attention_mask=mask,
             reference=reference, pairs=pairs)
    result = onnxpress.evaluate(_identity_model(3, mask_input=True), path, batch_size=4)
    expected = encoder_metrics(model, reference, pairs)
    assert result.metrics == pytest.approx(expected, abs=1e-6)
    unit = lambda e: e / np.linalg.norm(e, axis=1, keepdims=True)  # noqa: E731
    m, r = unit(model.astype(np.float64)), unit(reference.astype(np.float64))
    by_hand = _spearman_by_hand((m[pairs[:, 0]] * m[pairs[:, 1]]).sum(1),
                                (r[pairs[:, 0]] * r[pairs[:, 1]]).sum(1))
    assert result.metrics["spearman"] == pytest.approx(by_hand, abs=1e-6)
    assert result.value == pytest.approx(
        np.mean(np.array(_nearest_by_loops(model)) == _nearest_by_loops(reference)), abs=1e-12)


def test_encoder_data_sets_keep_metadata_out_of_the_inputs(tmp_path: Path, capsys) -> None:
    dataset = load_dataset("minilm-texts")
    assert isinstance(dataset, Dataset) and dataset.labels is None
    assert set(dataset.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert set(dataset.extras) == {"pairs", "reference"} and len(dataset) == 300
    # compare feeds only model inputs, for the named set and for a generic encoder .npz
    path = tmp_path / "enc.npz"
    np.savez(path, embedding=_unit(ANGLES), reference=_unit(ANGLES), pairs=np.zeros((9, 2), int))
    model = tmp_path / "identity.onnx"
    model.write_bytes(_identity_model())
    assert main(["compare", str(model), str(model), "--data", str(path)]) == 0
    assert "output" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, embedding=_unit(ANGLES), reference=_unit(ANGLES), pairs=np.array([[0, 6]]))
    with pytest.raises(BadInputError, match="'pairs' holds indices outside 0..5"):
        load_dataset(bad)
    np.savez(bad, embedding=_unit(ANGLES), reference=_unit(ANGLES)[:5])
    with pytest.raises(BadInputError, match="disagree on the number of samples"):
        load_dataset(bad)


def test_the_text_set_separates_paraphrases_from_unrelated_pairs() -> None:
    """The shipped reference embeddings rank the hand-labelled pairs as labelled."""
    texts = read_text_set()
    with np.load(TEXTS_NPZ) as data:
        reference = data["reference"].astype(np.float64)
        assert (data["pairs"] == texts.pairs).all() and len(reference) == len(texts.texts) == 300
        assert data["input_ids"].shape[1] <= 128 and data["attention_mask"][:, -1].any()
    assert TEXTS_NPZ.stat().st_size < 1_000_000
    cosines = (reference[texts.pairs[:, 0]] * reference[texts.pairs[:, 1]]).sum(1)
    kinds = np.array(texts.kinds)
    means = {kind: float(cosines[kinds == kind].mean())
             for kind in ("paraphrase", "related", "unrelated")}
    print(means)  # 0.729, 0.231, 0.066 when written
    assert (kinds == "paraphrase").sum() >= 100 and len(kinds) >= 400
    assert means["paraphrase"] > 0.65 and means["unrelated"] < 0.15
    assert means["unrelated"] < means["related"] < means["paraphrase"]
    # most paraphrases find their partner first (0.959 when written)
    partner = {}
    for (i, j), kind in zip(texts.pairs.tolist(), texts.kinds):
        if kind == "paraphrase":
            partner[i], partner[j] = j, i
    nearest = _nearest_by_loops(reference)
    assert np.mean([nearest[i] == j for i, j in partner.items()]) > 0.9
    # hard negatives share words, not meaning: MiniLM is fooled by them (role swaps ~0.98)
    hard = {tuple(p) for p in texts.hard_negatives.tolist()}
    is_hard = np.array([tuple(p) in hard for p in texts.pairs.tolist()])
    assert len(hard) >= 10 and is_hard.sum() == len(hard)
    assert cosines[is_hard].mean() > means["related"]


def test_the_fp32_export_agrees_with_its_own_reference(minilm_path: Path, capsys) -> None:
    result = onnxpress.evaluate(minilm_path, "minilm-texts", batch_size=32)
    assert result.samples == 300 and result.metric == "retrieval_agreement"
    assert result.metrics == pytest.approx(
        {"spearman": 1.0, "retrieval_agreement": 1.0, "mean_cosine": 1.0}, abs=1e-6)
    assert main(["evaluate", str(minilm_path), "--data", "minilm-texts"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "retrieval_agreement 1.0000"
    assert {line.split()[0] for line in lines[1:]} == {"spearman", "mean_cosine",
                                                       "retrieval_agreement"}
    assert main(["compare", str(minilm_path), str(minilm_path), "--data", "minilm-texts"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "sentence_embedding"


def test_a_degraded_model_scores_below_one(minilm_path: Path) -> None:
    """Matrix weights rounded to 6 bits per row: visibly worse, still a working encoder."""
    model = onnx.load(str(minilm_path))
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
            w = numpy_helper.to_array(init)
            scale = np.abs(w).max(axis=1, keepdims=True) / 31
            rounded = np.round(w / np.where(scale > 0, scale, 1)) * scale
            init.CopyFrom(numpy_helper.from_array(rounded.astype(np.float32), init.name))
    result = onnxpress.evaluate(model.SerializeToString(), "minilm-texts")
    print(result.metrics)  # spearman 0.998, retrieval_agreement 0.963, mean_cosine 0.993
    assert 0.9 < result.value < 0.999
    assert 0.99 < result.metrics["spearman"] < 0.9999
    assert 0.95 < result.metrics["mean_cosine"] < 0.9999
