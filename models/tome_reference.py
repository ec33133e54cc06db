"""ToMe written in PyTorch from the paper and its reference code, for the tests of the
``tome`` pass and the tome benchmark's naive prototype (both import it from here): keys
averaged over heads as the metric, even/odd bipartition, CLS row at -inf, the r best edges
merged by size-weighted average, unmerged A tokens in order then B, proportional attention;
and CLS-attention pruning. ``reference`` runs a zoo ViT's forward with either after each
block's attention."""

from __future__ import annotations

import math

import torch


def bipartite(metric, r: int, distill: bool = False):
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    scores[..., 0, :] = -math.inf  # the class token
    if distill:  # a distillation token at position 1: nothing merges into it
        scores[..., :, 0] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x):
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="sum")
        return torch.cat([unm, dst], dim=1)

    return merge


def drop(attention, r: int):
    """Keep all but the ``r`` tokens the CLS token attends to least (summed over heads),
    in order; CLS stays."""
    scores = attention[:, :, 0, :].sum(1)
    scores[:, 0] = math.inf
    gone = scores.topk(r, dim=-1, largest=False).indices
    keep = torch.ones_like(scores, dtype=torch.bool).scatter(1, gone, False)
    return lambda x: x[keep].reshape(x.shape[0], -1, x.shape[-1])


def reference(model, images, rs, mode: str = "merge", readout: str = "cls",
               protected: int = 1):
    """The zoo ViT's forward with ToMe (or CLS-attention pruning) after each block's
    attention, ``rs[i]`` tokens in block ``i`` (capped at half the unprotected ones);
    ``protected=2`` treats the first patch as a distillation token."""
    x = model.patch_embed(images)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + model.pos_embed
    size = None
    for block, r in zip(model.blocks, rs):
        attn, h = block.attn, block.norm1(x)
        b, n, c = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if size is not None:
            logits = logits + size.log()[:, None, None, :, 0]
        probabilities = logits.softmax(-1)
        x = x + attn.proj((probabilities @ v).transpose(1, 2).reshape(b, n, c))
        step = min(r, (n - protected) // 2)
        if step > 0 and mode == "prune":
            x = drop(probabilities, step)(x)
        elif step > 0:
            merge = bipartite(k.mean(1), step, distill=protected == 2)
            size = torch.ones_like(x[..., :1]) if size is None else size
            x, size = merge(x * size), merge(size)
            x = x / size
        x = x + block.mlp(block.norm2(x))
    x = model.norm(x)
    if readout == "cls":
        return model.head(x[:, 0])
    weights = torch.ones_like(x[..., :1]) if size is None else size
    return model.head((x * weights).sum(1) / weights.sum(1))
