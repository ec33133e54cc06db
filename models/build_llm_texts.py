"""Write the ``smollm2-text`` data set and the SmolLM2 calibration windows from the text set
in ``llm_texts/`` (written for this project), tokenized with SmolLM2's own tokenizer, so
that evaluation and calibration need neither the tokenizer nor transformers.

- ``smollm2_text.npz``: ``input_ids``, ``attention_mask`` int64 ``[N, WINDOW]``, the
  evaluation text cut into consecutive windows; ``targets`` int64 ``[N, WINDOW]``, the next
  token at each position (-1 at the last, which predicts nothing in its window). A data set
  with ``targets`` is scored as a causal language model: perplexity.
- ``smollm2_calibration.npz``: the calibration text's windows, ``input_ids`` and
  ``attention_mask`` only.

    python -m onnxpress.models.build_llm_texts
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from onnxpress.models.digits_data import describe_npz

HERE = Path(__file__).parent
TEXT_NPZ = HERE / "smollm2_text.npz"
CALIBRATION_NPZ = HERE / "smollm2_calibration.npz"
WINDOW = 128
IGNORED = -1


def windows(ids: list[int], length: int = WINDOW) -> np.ndarray:
    """``ids`` in consecutive windows of ``length`` (the tail that fills none is dropped)."""
    count = len(ids) // length
    return np.asarray(ids[: count * length], dtype=np.int64).reshape(count, length)


def next_tokens(input_ids: np.ndarray) -> np.ndarray:
    targets = np.full_like(input_ids, IGNORED)
    targets[:, :-1] = input_ids[:, 1:]
    return targets


def build() -> list[Path]:
    from onnxpress.models.digits_data import savez_compressed
    from onnxpress.models.smollm2 import load_tokenizer, text

    tokenizer = load_tokenizer()
    written = []
    for kind, path in (("evaluation", TEXT_NPZ), ("calibration", CALIBRATION_NPZ)):
        ids = windows(tokenizer(text(kind), add_special_tokens=False)["input_ids"])
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if kind == "evaluation":
            arrays["targets"] = next_tokens(ids)
        savez_compressed(path, arrays)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnxpress.models.build_llm_texts",
                                     description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    for path in build():
        print(describe_npz(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
