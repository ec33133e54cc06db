"""timm-style Vision Transformer builders (PyTorch; torch is imported inside functions).

Layout follows ``timm.models.vision_transformer.VisionTransformer``: a patch-embedding
Conv (kernel = stride = patch), a learned CLS token, a learned position embedding over
``1 + (img_size // patch) ** 2`` tokens, ``depth`` pre-norm blocks (LayerNorm -> fused qkv
Linear attention -> residual, LayerNorm -> GELU MLP -> residual), a final LayerNorm and a
Linear head on the CLS token. Attention is written out (``q @ k^T * scale``, Softmax,
``@ v``) rather than through ``scaled_dot_product_attention`` so that the exported graph
has the plain MatMul/Softmax pattern that graph passes look for.

Shapes (ViT-S/16 @ 224): input ``pixel_values`` float32 ``[B, 3, 224, 224]`` ->
``[B, 197, 384]`` tokens -> output ``logits`` float32 ``[B, num_classes]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of a ViT. ``dim`` must be divisible by ``heads``."""

    img_size: int = 224
    patch: int = 16
    in_chans: int = 3
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    qkv_bias: bool = True
    ln_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch) ** 2

    @property
    def num_tokens(self) -> int:
        """Patches plus the CLS token."""
        return self.num_patches + 1


def build_vit(cfg: ViTConfig, *, seed: int = 0) -> "torch.nn.Module":
    """Build a ViT in eval mode with deterministic (seeded) weights.

    Input ``[B, in_chans, img_size, img_size]`` float32; output ``[B, num_classes]``.
    """
    import torch
    from torch import nn

    if cfg.dim % cfg.heads:
        raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
    hidden = int(cfg.dim * cfg.mlp_ratio)

    class Attention(nn.Module):
        """Multi-head self-attention with a fused qkv projection: [B, N, C] -> [B, N, C]."""

        def __init__(self) -> None:
            super().__init__()
            self.heads = cfg.heads
            self.head_dim = cfg.dim // cfg.heads
            self.scale = self.head_dim**-0.5
            self.qkv = nn.Linear(cfg.dim, cfg.dim * 3, bias=cfg.qkv_bias)
            self.proj = nn.Linear(cfg.dim, cfg.dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
            attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj(x)

    class Mlp(nn.Module):
        """Linear(dim, hidden) -> GELU -> Linear(hidden, dim)."""

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(cfg.dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, cfg.dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
            self.mlp = Mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        """Conv(kernel=stride=patch): [B, C, H, W] -> [B, num_patches, dim]."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).flatten(2).transpose(1, 2)

    class VisionTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = cfg
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
            self.blocks = nn.Sequential(*[Block() for _ in range(cfg.depth)])
            self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
            self.head = nn.Linear(cfg.dim, cfg.num_classes)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(pixel_values)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls, x), dim=1) + self.pos_embed
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])

    torch.manual_seed(seed)
    model = VisionTransformer()
    with torch.no_grad():
        nn.init.trunc_normal_(model.pos_embed, std=0.02)
        nn.init.trunc_normal_(model.cls_token, std=1e-6)
        # Non-trivial LayerNorm affine so that folding / fusion bugs show numerically.
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0.0, 0.02)
    return model.eval()


def vit(
    *,
    img_size: int = 224,
    patch: int = 16,
    dim: int = 384,
    depth: int = 12,
    heads: int = 6,
    mlp_ratio: float = 4.0,
    num_classes: int = 1000,
    seed: int = 0,
) -> "torch.nn.Module":
    """General ViT builder; see :class:`ViTConfig` for the meaning of each argument."""
    cfg = ViTConfig(
        img_size=img_size,
        patch=patch,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        num_classes=num_classes,
    )
    return build_vit(cfg, seed=seed)


def vit_s16(num_classes: int = 1000, *, seed: int = 0) -> "torch.nn.Module":
    """ViT-S/16 @ 224: dim 384, depth 12, heads 6, mlp 1536; [B,3,224,224] -> [B,num_classes]."""
    return vit(dim=384, depth=12, heads=6, num_classes=num_classes, seed=seed)


def deit_tiny16(num_classes: int = 1000, *, seed: int = 0) -> "torch.nn.Module":
    """DeiT-Tiny/16 @ 224 (no distillation token): dim 192, depth 12, heads 3, mlp 768."""
    return vit(dim=192, depth=12, heads=3, num_classes=num_classes, seed=seed)


def vit_tiny_test(num_classes: int = 10, *, seed: int = 0) -> "torch.nn.Module":
    """A very small ViT for tests: 32x32 input, patch 8, dim 64, depth 2, heads 2 -> 17 tokens."""
    return vit(img_size=32, patch=8, dim=64, depth=2, heads=2, num_classes=num_classes, seed=seed)


def example_inputs(batch: int = 2, img_size: int = 224, *, seed: int = 0) -> tuple[Any, ...]:
    """``(pixel_values,)`` float32 ``[batch, 3, img_size, img_size]``, standard normal."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, img_size, img_size, generator=g),)
