"""The model zoo by name: a seeded PyTorch builder, example inputs and an ``export`` to ONNX.

Every entry exports with a dynamic batch axis (named ``batch``) so that one file serves
latency at batch 1 and throughput at batch 8. Builders import torch lazily; only
``minilm`` needs the ``[minilm]`` extra as well.

    python -m onnxpress.models.zoo                    # list the zoo
    python -m onnxpress.models.zoo resnet18 -o r18.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

Exporter = Literal["dynamo", "torchscript"]


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    build: Callable[[], "torch.nn.Module"]
    example_inputs: Callable[[int], tuple[Any, ...]]  # batch -> torch tensors
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    kind: Literal["image", "text"] = "image"  # text inputs get a dynamic "sequence" axis too

    def export(
        self, path: str | os.PathLike[str], *, exporter: Exporter = "dynamo", batch: int = 2
    ) -> Path:
        """Export to ``path`` with a dynamic batch axis (and sequence axis for text models);
        return the path.

        ``batch`` is the example batch; torch.export specialises a dimension of size 1,
        so it must be at least 2 for the batch axis to stay dynamic.
        """
        from onnxpress.frontends.torch_export import export_onnx

        axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in self.output_names}
        for name in self.input_names:
            axes[name] = {0: "batch", 1: "sequence"} if self.kind == "text" else {0: "batch"}
        export_onnx(
            self.build(), self.example_inputs(batch), path, input_names=self.input_names,
            output_names=self.output_names, dynamic_axes=axes, exporter=exporter,
        )
        return Path(path)


def _images(size: int) -> Callable[[int], tuple[Any, ...]]:
    def make(batch: int) -> tuple[Any, ...]:
        from onnxpress.models.vit import example_inputs

        return example_inputs(batch, size)

    return make


def _text(seq_len: int) -> Callable[[int], tuple[Any, ...]]:
    def make(batch: int) -> tuple[Any, ...]:
        from onnxpress.models.bert import example_inputs

        return example_inputs(batch, seq_len)

    return make


def _vit(**kwargs: Any) -> Callable[[], "torch.nn.Module"]:
    def make() -> "torch.nn.Module":
        from onnxpress.models.vit import vit

        return vit(**kwargs)

    return make


def _resnet18() -> "torch.nn.Module":
    from onnxpress.models.resnet import resnet18

    return resnet18()


def _resnet50() -> "torch.nn.Module":
    from onnxpress.models.resnet import resnet50

    return resnet50()


def _mobilenet_v2() -> "torch.nn.Module":
    from onnxpress.models.mobilenet import mobilenet_v2

    return mobilenet_v2()


def _bert_small() -> "torch.nn.Module":
    from onnxpress.models.bert import bert_small

    return bert_small()


def _minilm() -> "torch.nn.Module":
    from onnxpress.models.minilm import build_minilm

    return build_minilm()


def _minilm_inputs(batch: int) -> tuple[Any, ...]:
    from onnxpress.models.minilm import example_inputs

    return example_inputs(batch)


_PIXELS = ("pixel_values",)
_LOGITS = ("logits",)
_TEXT = ("input_ids", "attention_mask")

ZOO: dict[str, ZooModel] = {
    entry.name: entry
    for entry in (
        ZooModel("deit_tiny", "DeiT-Tiny/16 @224: dim 192, depth 12, heads 3",
                 _vit(dim=192, depth=12, heads=3), _images(224), _PIXELS, _LOGITS),
        ZooModel("deit_small", "DeiT-Small/16 @224: dim 384, depth 12, heads 6",
                 _vit(dim=384, depth=12, heads=6), _images(224), _PIXELS, _LOGITS),
        ZooModel("vit_32", "ViT for 32x32 inputs: patch 4 (65 tokens), dim 192, depth 6, heads 3",
                 _vit(img_size=32, patch=4, dim=192, depth=6, heads=3, num_classes=10),
                 _images(32), _PIXELS, _LOGITS),
        ZooModel("resnet18", "ResNet-18 @224", _resnet18, _images(224), _PIXELS, _LOGITS),
        ZooModel("resnet50", "ResNet-50 @224", _resnet50, _images(224), _PIXELS, _LOGITS),
        ZooModel("mobilenet_v2", "MobileNetV2 (width 1.0) @224", _mobilenet_v2, _images(224),
                 _PIXELS, _LOGITS),
        ZooModel("bert_small", "BERT-shaped encoder: hidden 256, 4 layers, 4 heads, seq 64",
                 _bert_small, _text(64), _TEXT, ("last_hidden_state", "pooler_output"), "text"),
        ZooModel("minilm", "all-MiniLM-L6-v2 (real weights), mean-pooled, L2-normalised",
                 _minilm, _minilm_inputs, _TEXT + ("token_type_ids",), ("sentence_embedding",),
                 "text"),
    )
}


def get(name: str) -> ZooModel:
    from onnxpress.errors import BadInputError

    if name not in ZOO:
        raise BadInputError(f"no zoo model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnxpress.models.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="zoo model to export; none lists the zoo")
    parser.add_argument("-o", "--output", help="ONNX file to write (default NAME.onnx)")
    parser.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    args = parser.parse_args(argv)
    if args.name is None:
        for entry in ZOO.values():
            print(f"{entry.name:14} {entry.description}")
        return 0
    print(get(args.name).export(args.output or f"{args.name}.onnx", exporter=args.exporter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
