"""``tome``: ToMe's bipartite soft matching inserted into exported ViTs. The reference is
ToMe's algorithm written here in PyTorch from the paper and its reference code (keys
averaged over heads as the metric, even/odd bipartition, CLS row at -inf, the r best
edges merged by size-weighted average, unmerged A tokens in order then B, proportional
attention), run on the same module the ONNX file was exported from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError

MODELS = Path(onnxpress.models.__file__).parent


def _bipartite(metric, r: int):
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    scores[..., 0, :] = -math.inf  # the class token
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


def _reference(model, images, r: int):
    """The zoo ViT's forward with ToMe in every block."""
    x = model.patch_embed(images)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + model.pos_embed
    size = None
    for block in model.blocks:
        attn, h = block.attn, block.norm1(x)
        b, n, c = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if size is not None:
            logits = logits + size.log()[:, None, None, :, 0]
        x = x + attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))
        step = min(r, (n - 1) // 2)
        if step > 0:
            merge = _bipartite(k.mean(1), step)
            size = torch.ones_like(x[..., :1]) if size is None else size
            x, size = merge(x * size), merge(size)
            x = x / size
        x = x + block.mlp(block.norm2(x))
    return model.head(model.norm(x)[:, 0])


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def vit(request, tmp_path_factory):
    from onnxpress.models.zoo import ZOO

    entry = ZOO["vit_32"]
    path = tmp_path_factory.mktemp("tome") / f"vit_32-{request.param}.onnx"
    return entry.build(), entry.export(path, exporter=request.param)


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 3, 32, 32)).astype(np.float32)


def _run(model, images: np.ndarray) -> np.ndarray:
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return next(iter(Runner(proto.SerializeToString()).run({"pixel_values": images}).values()))


def test_r0_is_bit_identical(vit):
    _, path = vit
    images = _images()
    base = _run(onnxpress.compile(path, "cleanup"), images)
    model, report = onnxpress.compile(path, "cleanup,tome(r=0)", return_report=True)
    assert not report.passes[-1].modified
    np.testing.assert_array_equal(_run(model, images), base)


@pytest.mark.parametrize("r", [4, 16])
def test_matches_the_pytorch_reference(vit, r):
    module, path = vit
    images = _images()
    model, report = onnxpress.compile(path, f"cleanup,tome(r={r})", return_report=True)
    stats = report.passes[-1].stats
    assert stats["protected"] == 1 and stats["tokens_in"][1] == 65 - r
    with torch.no_grad():
        expected = _reference(module, torch.from_numpy(images), r).numpy()
    np.testing.assert_allclose(_run(model, images), expected, rtol=0, atol=1e-4)


def test_digits_vit_keeps_its_accuracy_with_merging():
    model, report = onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup,tome(r=8)",
                                      return_report=True)
    assert report.passes[-1].stats["tokens_in"] == [65, 57, 49, 41, 33, 25]
    assert onnxpress.evaluate(model, "digits").value >= 0.9778 - 0.01


def test_a_model_without_transformer_blocks_is_refused():
    with pytest.raises(BadInputError, match="no pre-norm transformer block"):
        onnxpress.compile(MODELS / "digits_cnn.onnx", "cleanup,tome(r=4)")
