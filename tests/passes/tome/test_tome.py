"""``tome``: ToMe's bipartite soft matching inserted into exported ViTs. The reference is
ToMe's algorithm written in PyTorch from the paper and its reference code
(``onnxpress.models.tome_reference``), run on the same module the ONNX file was exported
from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pass_checks import EXACT, Within, check_pass

import onnxpress
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError
from onnxpress.models.tome_reference import bipartite, reference

MODELS = Path(onnxpress.models.__file__).parent


class _MeanPooled(torch.nn.Module):
    """The zoo ViT read out by the mean of all its tokens instead of the CLS token."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values):
        m = self.vit
        x = m.patch_embed(pixel_values)
        x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + m.pos_embed
        return m.head(m.norm(m.blocks(x)).mean(1))


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def vit(request, tmp_path_factory):
    from onnxpress.models.zoo import ZOO

    entry = ZOO["vit_32"]
    path = tmp_path_factory.mktemp("tome") / f"vit_32-{request.param}.onnx"
    return entry.build(), entry.export(path, exporter=request.param)


def _images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 3, 32, 32)).astype(np.float32)


def _export(module, path: Path, exporter: str) -> Path:
    from onnxpress.frontends.torch_export import export_onnx

    export_onnx(module, (torch.from_numpy(_images(2)),), path, input_names=["pixel_values"],
                output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}},
                exporter=exporter)
    return path


def _run(model, images: np.ndarray) -> np.ndarray:
    proto = onnxpress.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return next(iter(Runner(proto.SerializeToString()).run({"pixel_values": images}).values()))


def test_r0_is_bit_identical(vit):
    _, path = vit
    checked = check_pass("tome(r=0)", onnxpress.compile(path, "cleanup"),
                         {"pixel_values": _images()}, tolerance=EXACT)
    assert not checked.report.passes[-1].modified
    assert checked.after == checked.before


@pytest.mark.parametrize("r", [4, 16])
def test_matches_the_pytorchreference(vit, r):
    module, path = vit
    images = _images()
    with torch.no_grad():
        expected = reference(module, torch.from_numpy(images), [r] * 6).numpy()
    checked = check_pass(f"tome(r={r})", onnxpress.compile(path, "cleanup"),
                         {"pixel_values": images}, tolerance=Within(0, 1e-4),
                         expected={"logits": expected})
    stats = checked.stats("tome")
    assert stats["protected"] == 1 and stats["tokens_in"][1] == 65 - r


def test_a_second_protected_token_takes_in_no_merge(vit):
    """``protected=2`` (a distillation token beside CLS): ToMe's reference keeps it out
    of the B side's matches as well."""
    module, path = vit
    images = _images()
    model, report = onnxpress.compile(path, "cleanup,tome(r=16,protected=2)",
                                      return_report=True)
    assert report.passes[-1].stats["tokens_in"] == [65, 49, 33, 18, 10, 6]
    with torch.no_grad():
        expected = reference(module, torch.from_numpy(images), [16] * 6, protected=2)
    np.testing.assert_allclose(_run(model, images), expected.numpy(), rtol=0, atol=1e-4)


def test_fuse_for_ort_after_tome_fuses_every_attention(vit):
    """The metric is computed from the block's normed input, so the head split stays
    fusable, and log(size) becomes ORT's attention_bias; still the reference."""
    module, path = vit
    images = _images()
    model = onnxpress.compile(path, "cleanup,tome(r=8),fuse-for-ort")
    fused = [n for n in model.graph if n.op_type == "Attention"]
    assert len(fused) == 6 and [len(n.inputs) for n in fused] == [3] + [6] * 5
    assert not [n for n in model.graph if n.op_type == "Softmax"]
    with torch.no_grad():
        expected = reference(module, torch.from_numpy(images), [8] * 6).numpy()
    np.testing.assert_allclose(_run(model, images), expected, rtol=0, atol=1e-4)


def test_digits_vit_loses_under_a_point_at_over_a_third_fewer_macs():
    model, report = onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup,tome(r=10)",
                                      return_report=True)
    stats = report.passes[-1].stats
    assert stats["tokens_in"] == [65, 55, 45, 35, 25, 15]
    assert stats["macs_kept"] <= 0.65
    base = onnxpress.evaluate(MODELS / "digits_vit.onnx", "digits").value
    assert onnxpress.evaluate(model, "digits").value >= base - 0.01


def test_a_model_without_transformer_blocks_is_refused():
    with pytest.raises(BadInputError, match="no pre-norm transformer block"):
        onnxpress.compile(MODELS / "digits_cnn.onnx", "cleanup,tome(r=4)")


def _macs(depth: int, dim: int, tokens: list[int], mlp: list[int], patches: int,
          patch_in: int, classes: int) -> int:
    """A ViT's multiply-accumulates at batch 1 by hand: per block the q/k/v/proj
    projections (4 C^2 a token) and the two token-by-token products (2 N^2 C) before the
    merge, the MLP (8 C^2 a token) after it; the patch embedding and the head."""
    blocks = sum(4 * dim * dim * n + 2 * n * n * dim + 8 * dim * dim * m
                 for n, m in zip(tokens, mlp))
    return blocks + patches * patch_in * dim + dim * classes


def test_reported_macs_match_a_count_by_hand(vit):
    _, path = vit
    _, report = onnxpress.compile(path, "cleanup,tome(r=16,mode=prune)", return_report=True)
    stats = report.passes[-1].stats
    before = _macs(6, 192, [65] * 6, [65] * 6, 64, 48, 10)
    tokens = [65, 49, 33, 17, 9, 5]
    after = _macs(6, 192, tokens, [49, 33, 17, 9, 5, 3], 64, 48, 10)
    # the prune mode adds one [1, H] x [H, N] product per block: the head sum of CLS's row
    after += sum(3 * n for n in tokens)
    assert stats["tokens_in"] == tokens
    assert stats["macs_before_M"] == round(before / 1e6, 1)
    assert stats["macs_after_M"] == round(after / 1e6, 1)


@pytest.mark.parametrize("schedule, rs", [("decreasing", [16, 12, 9, 6, 3, 0]),
                                          ("increasing", [0, 3, 6, 9, 12, 16])])
def test_schedules_match_thereference(vit, schedule, rs):
    module, path = vit
    images = _images()
    model, report = onnxpress.compile(path, f"cleanup,tome(r=8,schedule={schedule})",
                                      return_report=True)
    with torch.no_grad():
        expected = reference(module, torch.from_numpy(images), rs).numpy()
    np.testing.assert_allclose(_run(model, images), expected, rtol=0, atol=1e-4)


def test_prune_mode_matches_thereference(vit):
    module, path = vit
    images = _images()
    model = onnxpress.compile(path, "cleanup,tome(r=8,mode=prune)")
    with torch.no_grad():
        expected = reference(module, torch.from_numpy(images), [8] * 6, mode="prune").numpy()
    np.testing.assert_allclose(_run(model, images), expected, rtol=0, atol=1e-4)


def test_keep_picks_the_smallest_r_that_meets_it(vit):
    _, path = vit
    _, report = onnxpress.compile(path, "cleanup,tome(keep=0.6)", return_report=True)
    chosen = report.passes[-1].stats
    _, smaller = onnxpress.compile(path, f"cleanup,tome(r={chosen['r'] - 1})",
                                   return_report=True)
    # the estimate ignores the merge's own small products, hence the slack
    assert chosen["macs_kept"] <= 0.6 + 0.005
    assert smaller.passes[-1].stats["macs_kept"] > 0.6


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_token_mean_readout_is_weighed_by_size(exporter, tmp_path):
    from onnxpress.models.zoo import ZOO

    module = _MeanPooled(ZOO["vit_32"].build()).eval()
    path = _export(module, tmp_path / "mean.onnx", exporter)
    images = _images()
    model, report = onnxpress.compile(path, "cleanup,tome(r=8)", return_report=True)
    assert any("token mean" in note for note in report.passes[-1].notes)
    with torch.no_grad():
        expected = reference(module.vit, torch.from_numpy(images), [8] * 6,
                              readout="mean").numpy()
    np.testing.assert_allclose(_run(model, images), expected, rtol=0, atol=1e-4)


def test_quantize_leaves_the_similarity_in_float():
    from onnxpress.ir.marks import KEEP_FLOAT

    calibration = onnxpress.CalibrationData(MODELS / "digits_calibration.npz")
    model, report = onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup,tome(r=8),quantize",
                                      calibration=calibration, return_report=True)
    marked = [n for n in model.graph if KEEP_FLOAT in n.metadata_props]
    assert len(marked) == 2 * 6  # the key metric and the similarity of each of the 6 blocks
    for node in marked:
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            assert producer is None or producer.op_type != "DequantizeLinear"
    assert any("left in float" in note for note in report.passes[-1].notes)
    original = onnxpress.evaluate(MODELS / "digits_vit.onnx", "digits").value
    assert onnxpress.evaluate(model, "digits").value >= original - 0.015


@pytest.mark.parametrize("spec, message", [
    ("tome(r=4,schedule=fast)", "schedule"),
    ("tome(r=4,mode=drop)", "'drop' is not one of merge, prune"),
    ("tome(r=4,keep=0.5)", "not both"),
    ("tome(keep=1.5)", "between 0 and 1"),
    ("tome(r=4,mode=prune,protected=0)", "CLS"),
])
def test_bad_options_are_refused(spec, message):
    with pytest.raises(BadInputError, match=message):
        onnxpress.compile(MODELS / "digits_vit.onnx", f"cleanup,{spec}")


class _MhaBlock(torch.nn.Module):
    """A pre-norm block around ``nn.MultiheadAttention`` (batch first)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        nn = torch.nn
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _MhaViT(torch.nn.Module):
    """A small ViT (32x32 images, patch 4: 65 tokens) built on ``nn.MultiheadAttention``."""

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, dim, 4, 4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = torch.nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.blocks = torch.nn.ModuleList(_MhaBlock(dim, heads) for _ in range(depth))
        self.norm, self.head = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, 10)

    def forward(self, images, r: int = 0):
        """``r > 0``: ToMe after each block's attention, from the MHA's own weights."""
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        size = None
        for block in self.blocks:
            if not r:
                x = block(x)
                continue
            attn, h = block.attn, block.norm1(x)
            b, n, c = h.shape
            heads, d = attn.num_heads, c // attn.num_heads
            q, k, v = (torch.nn.functional.linear(h, w, bias).reshape(b, n, heads, d)
                       .transpose(1, 2) for w, bias in zip(attn.in_proj_weight.chunk(3),
                                                           attn.in_proj_bias.chunk(3)))
            logits = q @ k.transpose(-2, -1) / math.sqrt(d)
            if size is not None:
                logits = logits + size.log()[:, None, None, :, 0]
            x = x + attn.out_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))
            merge = bipartite(k.mean(1), min(r, (n - 1) // 2))
            size = torch.ones_like(x[..., :1]) if size is None else size
            x, size = merge(x * size), merge(size)
            x = x / size
            x = x + block.mlp(block.norm2(x))
        return self.head(self.norm(x)[:, 0])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_vit_on_nn_multiheadattention_matches_thereference(exporter, tmp_path):
    module = _MhaViT().eval()
    path = _export(module, tmp_path / "mha.onnx", exporter)
    images = _images()
    model, report = onnxpress.compile(path, "cleanup,tome(r=8)", return_report=True)
    assert report.passes[-1].stats["tokens_in"] == [65, 57, 49]
    with torch.no_grad():
        expected = module(torch.from_numpy(images), r=8).numpy()
        unmerged = module(torch.from_numpy(images)).numpy()
    merged = _run(model, images)
    np.testing.assert_allclose(merged, expected, rtol=0, atol=1e-4)
    assert np.abs(merged - unmerged).max() > 1e-2  # merging did change the outputs
