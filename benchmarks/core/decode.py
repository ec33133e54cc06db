"""Greedy generation with a KV cache on ONNX Runtime, timed the way a generator runs it.

A causal LM export with a cache (``onnxpress.models.smollm2.export_llm(kv_cache=True)``)
takes ``input_ids`` ``[batch, sequence]``, ``attention_mask`` ``[batch, past + sequence]`` and
``past_key_<i>``/``past_value_<i>`` ``[batch, kv_heads, past, head_dim]``, and returns
``logits`` and ``present_key_<i>``/``present_value_<i>`` (the past with this call's tokens
added). :class:`Generator` runs it: *prefill* is one call on the whole prompt with an empty
past (length 0); each *decode step* feeds the last token and the previous call's
``present_*`` as ``past_*`` (numpy arrays, as a plain Python generator does; no I/O binding).
The next token is the argmax of the last position's logits (greedy).

- :func:`time_decode`: decode tokens/s of several variants, interleaved round by round
  (A B C A B C ...) like :mod:`.timing`: each round runs, per variant, the prefill (not
  timed) then ``new_tokens`` decode steps (timed); medians and p10/p90 over the rounds;
- :func:`prefill_feeds` / :func:`with_empty_past`: the inputs of a prefill (and of a
  perplexity run on the cache export: the same windows, with an empty past);
- :func:`generate_once`: the peak-memory probe, run in a fresh child (:mod:`.child`): load
  the model, prefill, decode; its peak RSS is the child's.

Sessions are the timing ones (:mod:`onnxpress.backends.bench`): CPU provider,
ORT_ENABLE_ALL, ``threads`` intra-op threads, one inter-op thread, no thread spinning.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PAST, PRESENT = "past_", "present_"


def kv_inputs(path: Path | str) -> dict[str, tuple[int, int]]:
    """``past_*`` input -> (kv_heads, head_dim), read from the file's signature (weights are
    not loaded); empty for a model without a cache."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = {}
    for value in graph.input:
        if value.name.startswith(PAST):
            dims = value.type.tensor_type.shape.dim
            found[value.name] = (dims[1].dim_value, dims[3].dim_value)
    return found


def with_empty_past(arrays: Mapping[str, np.ndarray], kv: Mapping[str, tuple[int, int]]
                    ) -> dict[str, np.ndarray]:
    """``arrays`` (``input_ids`` ``[N, S]``, ``attention_mask``) plus an empty past for each
    of ``kv``'s inputs: ``[N, kv_heads, 0, head_dim]`` float32."""
    count = len(arrays["input_ids"])
    empty = {name: np.zeros((count, heads, 0, dim), np.float32)
             for name, (heads, dim) in kv.items()}
    return {**arrays, **empty}


def prefill_feeds(ids: np.ndarray, kv: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, np.int64).reshape(1, -1)
    return with_empty_past({"input_ids": ids, "attention_mask": np.ones_like(ids)}, kv)


class Generator:
    """One session over a cache export, greedy."""

    def __init__(self, path: Path | str, *, threads: int) -> None:
        from onnxpress.backends.ort_runner import Runner

        self.session = Runner(str(path), threads=threads, spinning=False,
                              precise=False).session
        self.kv = kv_inputs(path)
        outputs = [o.name for o in self.session.get_outputs()]
        self._presents = [PRESENT + name.removeprefix(PAST) for name in self.kv]
        missing = [n for n in self._presents if n not in outputs]
        if not self.kv or missing:
            raise ValueError(f"{Path(path).name}: not a cache export (no past_* inputs with "
                             f"matching present_* outputs{': ' + missing[0] if missing else ''})")
        self._names = [outputs[0], *self._presents]  # logits first

    def generate(self, prompt: np.ndarray, new_tokens: int
                 ) -> tuple[list[int], float, list[float]]:
        """(the ``new_tokens + 1`` greedy tokens: the prefill's, then one per decode step;
        the prefill's seconds; each decode step's seconds)."""
        start = time.perf_counter()
        logits, *past = self.session.run(self._names, prefill_feeds(prompt, self.kv))
        prefill_s = time.perf_counter() - start
        tokens, steps = [int(logits[0, -1].argmax())], []
        length = past[0].shape[2]
        for _ in range(new_tokens):
            feeds = {"input_ids": np.array([[tokens[-1]]], np.int64),
                     "attention_mask": np.ones((1, length + 1), np.int64),
                     **dict(zip(self.kv, past))}
            start = time.perf_counter()
            logits, *past = self.session.run(self._names, feeds)
            steps.append(time.perf_counter() - start)
            tokens.append(int(logits[0, -1].argmax()))
            length += 1
        return tokens, prefill_s, steps


def time_decode(paths: Mapping[str, Path | str], prompt: np.ndarray, *, new_tokens: int,
                repeats: int, threads: int = 2, warmup: int = 1) -> dict[str, dict[str, Any]]:
    """variant -> ``tokens_per_s`` (new_tokens / the median round's decode seconds),
    ``ms_per_token``, ``p10_tokens_per_s``/``p90_tokens_per_s`` (of the rounds), ``repeats``,
    ``tokens`` (the greedy tokens of the last round)."""
    generators = {label: Generator(path, threads=threads) for label, path in paths.items()}
    for _ in range(warmup):
        for generator in generators.values():
            generator.generate(prompt, new_tokens)
    seconds: dict[str, list[float]] = {label: [] for label in generators}
    tokens: dict[str, list[int]] = {}
    for _ in range(repeats):
        for label, generator in generators.items():
            tokens[label], _, steps = generator.generate(prompt, new_tokens)
            seconds[label].append(sum(steps))
    timed = {}
    for label, rounds in seconds.items():
        deciles = statistics.quantiles(rounds, n=10) if len(rounds) > 1 else rounds * 9
        median = statistics.median(rounds)
        timed[label] = {"tokens_per_s": new_tokens / median,
                        "ms_per_token": median * 1e3 / new_tokens,
                        "p10_tokens_per_s": new_tokens / deciles[-1],
                        "p90_tokens_per_s": new_tokens / deciles[0],
                        "repeats": len(rounds), "tokens": tokens[label]}
    return timed


def same_prefix(tokens: list[int], reference: list[int]) -> int:
    """How many leading tokens agree with ``reference`` (greedy generation diverges for
    good after its first different token)."""
    count = 0
    for mine, theirs in zip(tokens, reference):
        if mine != theirs:
            break
        count += 1
    return count


# --- run in a fresh child process (see run_child) ----------------------------------------

def generate_once(path: str, prompt: list[int], new_tokens: int, threads: int
                  ) -> dict[str, Any]:
    """Load ``path``, prefill ``prompt``, decode ``new_tokens``: the RSS after loading and the
    work's wall times (the child's peak RSS comes with the result)."""
    from .memory import rss_mb

    before = rss_mb()
    start = time.perf_counter()
    generator = Generator(path, threads=threads)
    load_s = time.perf_counter() - start
    loaded = rss_mb()
    tokens, prefill_s, steps = generator.generate(np.array(prompt, np.int64), new_tokens)
    return {"rss_before_load_mb": round(before, 1), "rss_loaded_mb": round(loaded, 1),
            "load_s": round(load_s, 3), "prefill_s": round(prefill_s, 4),
            "decode_s": round(sum(steps), 4), "tokens": tokens}
