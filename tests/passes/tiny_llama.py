"""The tiny random LLaMA (hidden 64, 4 heads over 2 KV heads, SwiGLU, two layers) after
``cleanup``, and calibration batches of random tokens: what the LLM tests of ``prune`` and
``lowrank`` run on (exported from PyTorch in seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import onnxpress


def cleaned_tiny_llama(folder: Path, seed: int = 0) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """(the cleaned export in ``folder``, three batches of 4 x 16 tokens)."""
    from onnxpress.models.smollm2 import export_llm, tiny_llama

    export_llm(tiny_llama(0, layers=2), str(folder / "export.onnx"), kv_cache=False)
    onnxpress.save(onnxpress.compile(folder / "export.onnx", "cleanup"), folder / "clean.onnx")
    ids = np.random.default_rng(seed).integers(0, 256, (12, 16)).astype(np.int64)
    batches = [{"input_ids": ids[i:i + 4], "attention_mask": np.ones((4, 16), np.int64)}
               for i in range(0, 12, 4)]
    return folder / "clean.onnx", batches
