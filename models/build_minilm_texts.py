"""Write ``minilm_texts.npz``, the ``minilm-texts`` data set, from ``minilm_texts.json``.

``minilm_texts.json`` is the source: 300 hand-written sentences in 10 topics and labelled
pairs (``paraphrase``, same-topic ``related``, cross-topic ``unrelated``; ``hard_negatives``
marks pairs that share most words but not the meaning). The ``.npz`` is what ``evaluate``
reads, so that evaluation needs neither the tokenizer nor torch:

- ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``[300, S]``, padded to the
  longest sentence (``S`` = its token count, at most 128), so every batch has one shape;
- ``pairs``: int64 ``[P, 2]``, every labelled pair (the kinds stay in the JSON);
- ``reference``: float32 ``[300, 384]``, the exported fp32 model's embeddings under ONNX
  Runtime, the baseline a compiled model is scored against.

The bytes are reproducible (fixed zip timestamps) for a given ONNX Runtime and export.

    python -m onnxpress.models.build_minilm_texts [-o PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from onnxpress.models.digits_data import describe_npz

HERE = Path(__file__).parent
TEXTS_JSON = HERE / "minilm_texts.json"
TEXTS_NPZ = HERE / "minilm_texts.npz"
KINDS = ("paraphrase", "related", "unrelated")


@dataclasses.dataclass(frozen=True)
class TextSet:
    texts: list[str]
    topics: list[str]
    pairs: np.ndarray  # int64 [P, 2]
    kinds: list[str]  # one of KINDS per pair
    hard_negatives: np.ndarray  # int64 [H, 2], each also in pairs


def read_text_set(path: str | os.PathLike[str] = TEXTS_JSON) -> TextSet:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    sentences = doc["sentences"]
    return TextSet(
        texts=[s["text"] for s in sentences],
        topics=[s["topic"] for s in sentences],
        pairs=np.array([p[:2] for p in doc["pairs"]], dtype=np.int64).reshape(-1, 2),
        kinds=[p[2] for p in doc["pairs"]],
        hard_negatives=np.array(doc.get("hard_negatives", []), dtype=np.int64).reshape(-1, 2),
    )


def build(
    output: str | os.PathLike[str] = TEXTS_NPZ, *, texts: str | os.PathLike[str] = TEXTS_JSON
) -> Path:
    """Tokenize, embed with ``minilm_onnx()`` on ONNX Runtime, write ``output``; return it."""
    from onnxpress.backends.ort_runner import Runner
    from onnxpress.models.digits_data import savez_compressed
    from onnxpress.models.minilm import OUTPUT_NAME, minilm_onnx, tokenize

    text_set = read_text_set(texts)
    unknown = sorted(set(text_set.kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"{texts}: unknown pair kinds {unknown}")
    inputs = tokenize(text_set.texts, max_length=128)  # padded to the longest sentence
    reference = Runner(minilm_onnx()).run(inputs)[OUTPUT_NAME].astype(np.float32)
    path = Path(output)
    savez_compressed(path, {**inputs, "pairs": text_set.pairs, "reference": reference})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnxpress.models.build_minilm_texts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(TEXTS_NPZ), help="the .npz to write")
    path = build(parser.parse_args(argv).output)
    print(describe_npz(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
