"""BERT-shaped text encoder builders, laid out like Hugging Face ``BertModel``.

Embeddings: word + learned absolute position (``position_ids`` buffer sliced to the
sequence length) + token type (a zeros ``token_type_ids`` buffer, sliced and expanded to
the batch, as HF does when the caller passes none), then LayerNorm. The additive mask is
built the HF way from the int64 ``attention_mask`` input:
``(1 - mask[:, None, None, :].float()) * finfo(float32).min``. Each layer: separate Q, K, V
Linear, scores ``q @ k^T / sqrt(head_dim) + mask``, Softmax, ``@ v``, output Linear,
residual, LayerNorm (post-norm); then an erf-GELU FFN, residual, LayerNorm. A pooler
(Linear + Tanh on the first token) follows, as in ``BertModel``.

Shapes (BERT-base): inputs ``input_ids`` int64 ``[B, S]``, ``attention_mask`` int64
``[B, S]`` and, optionally, ``token_type_ids`` int64 ``[B, S]`` -> outputs
``last_hidden_state`` float32 ``[B, S, 768]`` and ``pooler_output`` float32 ``[B, 768]``.
``S <= max_position`` (512).

``load_hf_weights`` loads a Hugging Face ``BertModel`` checkpoint (e.g. the tensors of a
``model.safetensors``) into a ``build_bert`` module, mapping HF's parameter names to ours.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder. ``hidden`` must be divisible by ``heads``."""

    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    ln_eps: float = 1e-12
    seq_len: int = 128  # the sequence length example inputs use


BERT_BASE = BertConfig()
BERT_SMALL = BertConfig(hidden=256, layers=4, heads=4, intermediate=1024, seq_len=64)
"""A small config (BERT-small-like, ~11M params mostly in the 30522x256 word embedding)."""


def build_bert(cfg: BertConfig, *, seed: int = 0) -> "torch.nn.Module":
    """Build a BERT encoder in eval mode with seeded weights (HF-style normal(0, 0.02) init).

    ``forward(input_ids, attention_mask, token_type_ids=None)`` ->
    ``(last_hidden_state, pooler_output)``; no ``token_type_ids`` means all zeros.
    """
    import torch
    from torch import nn

    if cfg.hidden % cfg.heads:
        raise ValueError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
    head_dim = cfg.hidden // cfg.heads

    class Embeddings(nn.Module):
        """[B, S] ids -> [B, S, hidden]: word + position + token type, LayerNorm."""

        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
            self.position_embeddings = nn.Embedding(cfg.max_position, cfg.hidden)
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
            self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
            self.register_buffer(
                "position_ids", torch.arange(cfg.max_position).expand((1, -1)), persistent=False
            )
            self.register_buffer(
                "token_type_ids",
                torch.zeros((1, cfg.max_position), dtype=torch.long),
                persistent=False,
            )

        def forward(
            self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            batch, seq = input_ids.shape
            position_ids = self.position_ids[:, :seq]
            if token_type_ids is None:
                token_type_ids = self.token_type_ids[:, :seq].expand(batch, seq)
            x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
            x = x + self.position_embeddings(position_ids)
            return self.LayerNorm(x)

    class SelfAttention(nn.Module):
        """Separate Q/K/V projections, additive mask: [B, S, H] -> [B, S, H]."""

        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(cfg.hidden, cfg.hidden)
            self.key = nn.Linear(cfg.hidden, cfg.hidden)
            self.value = nn.Linear(cfg.hidden, cfg.hidden)

        def _heads(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.size()[:-1] + (cfg.heads, head_dim)).permute(0, 2, 1, 3)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            q, k, v = (
                self._heads(self.query(x)),
                self._heads(self.key(x)),
                self._heads(self.value(x)),
            )
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + mask
            ctx = torch.matmul(scores.softmax(dim=-1), v).permute(0, 2, 1, 3).contiguous()
            return ctx.view(ctx.size()[:-2] + (cfg.hidden,))

    class Layer(nn.Module):
        """Post-norm encoder layer: LN(x + attn(x)), then LN(x + FFN(x))."""

        def __init__(self) -> None:
            super().__init__()
            self.attention = SelfAttention()
            self.attention_output = nn.Linear(cfg.hidden, cfg.hidden)
            self.attention_norm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)
            self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
            self.act = nn.GELU()
            self.output = nn.Linear(cfg.intermediate, cfg.hidden)
            self.output_norm = nn.LayerNorm(cfg.hidden, eps=cfg.ln_eps)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            x = self.attention_norm(x + self.attention_output(self.attention(x, mask)))
            return self.output_norm(x + self.output(self.act(self.intermediate(x))))

    class BertEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = cfg
            self.embeddings = Embeddings()
            self.layer = nn.ModuleList([Layer() for _ in range(cfg.layers)])
            self.pooler = nn.Linear(cfg.hidden, cfg.hidden)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.embeddings(input_ids, token_type_ids)
            dtype = x.dtype
            ext = attention_mask[:, None, None, :].to(dtype=dtype)
            ext = (1.0 - ext) * torch.finfo(dtype).min
            for layer in self.layer:
                x = layer(x, ext)
            pooled = torch.tanh(self.pooler(x[:, 0]))
            return x, pooled

    torch.manual_seed(seed)
    model = BertEncoder()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.02)
                if isinstance(m, nn.Linear):
                    m.bias.normal_(0.0, 0.02)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0.0, 0.02)
    return model.eval()


# HF BertModel name fragment -> ours, applied in order (attention.output before output).
_HF_RENAMES = (
    (r"^encoder\.layer\.", "layer."),
    (r"\.attention\.self\.", ".attention."),
    (r"\.attention\.output\.dense\.", ".attention_output."),
    (r"\.attention\.output\.LayerNorm\.", ".attention_norm."),
    (r"\.intermediate\.dense\.", ".intermediate."),
    (r"\.output\.dense\.", ".output."),
    (r"\.output\.LayerNorm\.", ".output_norm."),
    (r"^pooler\.dense\.", "pooler."),
)


def load_hf_weights(model: "torch.nn.Module", tensors: Mapping[str, "torch.Tensor"]) -> None:
    """Load a Hugging Face ``BertModel`` state dict into ``model`` (from ``build_bert``), strictly.

    Every tensor must land on a parameter and every parameter must be set, else ``ValueError``
    names the leftovers (a wrong shape raises torch's ``RuntimeError``): a silently half-loaded
    encoder still runs and produces plausible-looking garbage. HF's ``embeddings.position_ids``
    buffer is not a weight; it is checked to be the ``arange`` ours holds, then skipped.
    """
    import torch

    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name == "embeddings.position_ids":
            ours = model.embeddings.position_ids
            if not torch.equal(tensor.reshape(-1), ours[0, : tensor.numel()]):
                raise ValueError("embeddings.position_ids is not 0, 1, 2, ...")
            continue
        for pattern, replacement in _HF_RENAMES:
            name = re.sub(pattern, replacement, name)
        state[name] = tensor
    missing, unused = model.load_state_dict(state, strict=False)
    if missing or unused:
        raise ValueError(f"weights do not fit the model: missing {missing}, unused {unused}")


def bert_base(seq_len: int = 128, *, seed: int = 0) -> "torch.nn.Module":
    """BERT-base: hidden 768, 12 heads, 12 layers, FFN 3072, vocab 30522; inputs [B, seq_len]."""
    return build_bert(BertConfig(seq_len=seq_len), seed=seed)


def bert_small(seq_len: int = 64, *, seed: int = 0) -> "torch.nn.Module":
    """Small BERT: hidden 256, 4 heads, 4 layers, FFN 1024, vocab 30522; inputs [B, seq_len]."""
    return build_bert(dataclasses.replace(BERT_SMALL, seq_len=seq_len), seed=seed)


def example_inputs(
    batch: int = 2, seq_len: int = 128, vocab_size: int = 30522, *, seed: int = 0
) -> tuple[Any, ...]:
    """``(input_ids, attention_mask)`` int64 ``[batch, seq_len]``.

    ids are uniform in ``[1, vocab_size)``; the mask is ones with the tail of every row
    after the first zeroed (padding), so the additive mask matters.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, seq_len), generator=g, dtype=torch.long)
    attention_mask = torch.ones(batch, seq_len, dtype=torch.long)
    for i in range(1, batch):
        attention_mask[i, seq_len - (seq_len // 4) * (1 + (i - 1) % 3) :] = 0
    return input_ids, attention_mask
