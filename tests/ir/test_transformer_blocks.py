"""Transformer-block discovery (``ir.attention.blocks``) on exported graphs: the trained
digits ViT (TorchScript), the zoo's 65-token ViT from both exporters, and models with no
attention (the zoo ResNet-18 and the digits CNN) that must yield no block. Checked: one
block per Softmax, in order, with the shapes token merging relies on (keys ``[B, H, d,
N]``, the stream between attention and MLP ``[B, N, C]``), and the CLS token counted."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxpress
from onnxpress.ir.attention.blocks import leading_tokens, transformer_blocks

MODELS = Path(onnxpress.models.__file__).parent


def _check(model, depth: int, heads: int, width: int, tokens: int) -> None:
    blocks, notes = transformer_blocks(model.graph)
    assert len(blocks) == depth and not notes
    order = {node: i for i, node in enumerate(model.graph)}
    assert [order[b.residual] for b in blocks] == sorted(order[b.residual] for b in blocks)
    for before, after in zip(blocks, blocks[1:]):
        assert after.stream is before.out  # the blocks chain on one residual stream
    for block in blocks:
        assert block.attention.heads[0].heads == heads
        assert list(block.keys.shape)[1:] == [heads, width // heads, tokens]
        assert list(block.mid.shape)[1:] == [tokens, width]
        assert block.mid in list(block.mlp_residual.inputs)
    assert leading_tokens(blocks[0]) == 1


def test_digits_vit():
    _check(onnxpress.compile(MODELS / "digits_vit.onnx", "cleanup"), 6, 4, 64, 65)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_zoo_vit_from_both_exporters(exporter, tmp_path):
    from onnxpress.models.zoo import ZOO

    path = ZOO["vit_32"].export(tmp_path / f"vit_32-{exporter}.onnx", exporter=exporter)
    _check(onnxpress.compile(path, "cleanup"), 6, 3, 192, 65)


def test_models_without_attention_have_no_blocks(tmp_path):
    from onnxpress.models.zoo import ZOO

    path = ZOO["resnet18"].export(tmp_path / "resnet18.onnx", exporter="dynamo")
    for source in (path, MODELS / "digits_cnn.onnx"):
        assert transformer_blocks(onnxpress.compile(source, "cleanup").graph) == ([], [])
