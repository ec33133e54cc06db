"""The quantized inputs the ``fold_qdq`` suite folds, each from one fp32 model (the zoo's
seeded ResNet-18, or the digits CNN in a smoke run), built once into the cache:

- ``ort-qdq-u8s8-pc``: ``quantize_static``, QDQ, U8S8 per channel, ``AddQDQPairToWeight``
  (float weights behind Q -> DQ, what fold-qdq folds to int8);
- ``ort-qdq-default``: ``quantize_static``, QDQ, its defaults (S8S8 per tensor, int8
  weights already); both on ``quant_pre_process``'s output, as ONNX Runtime recommends;
- ``qat-torchscript`` / ``qat-dynamo``: FX-mode QAT (``prepare_qat_fx``, the x86 non-fused
  FakeQuantize qconfig: uint8 activations in (0, 127), per-channel int8 weights) of the same
  PyTorch module, observers run on seeded batches, exported by TorchScript, and by
  torch.export with each FakeQuantize called as the ``fake_quantize_per_*_affine`` it
  computes (torch.export cannot trace its branches on buffers, nor give fake-quant a
  symbolic batch: batch 1 and 8 are two files).

ORT's calibration and the QAT observers see 8 seeded normal images. QAT runs in a child
process (torch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from ..core import subjects
from ..core.cache import version_tag
from ..core.child import run_child
from ..core.suite import Context
from ..core.variants import CalibrationReader, preprocessed


@dataclasses.dataclass(frozen=True)
class Source:
    model: str
    input: str
    shape: tuple[int, ...]  # one image


SOURCES = {"resnet18": Source("resnet18", "pixel_values", (3, 224, 224)),
           "digits_cnn": Source("digits_cnn", "image", (1, 8, 8))}
INPUTS = ("ort-qdq-u8s8-pc", "ort-qdq-default", "qat-torchscript", "qat-dynamo")


def images(source: Source, count: int, seed: int) -> np.ndarray:
    shape = (count, *source.shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def prepare(source: Source, ctx: Context, names: tuple[str, ...] = INPUTS,
            ) -> dict[str, dict[int, Path]]:
    """Each input's file per batch size (the same file where the batch axis is dynamic)."""
    subject = subjects.subject(source.model, ctx.cache)
    files = {}
    for name in names:
        if name.startswith("ort-"):
            def build(path: Path, name: str = name) -> None:
                _ort_qdq(source, subject, ctx, path, per_channel=name == "ort-qdq-u8s8-pc")
        else:
            def build(path: Path, name: str = name) -> None:
                run_child(qat_export, model=source.model, target=str(path),
                          dynamo=name == "qat-dynamo")
        entry = ctx.cache.file((source.model, name, version_tag("onnxruntime", "torch")), build)
        b1 = _batch1(entry.path)
        files[name] = {1: b1 if b1.is_file() else entry.path, 8: entry.path}
    return files


def _batch1(path: Path) -> Path:
    return path.with_name(f"{path.stem}.b1.onnx")


def _ort_qdq(source: Source, subject: subjects.Subject, ctx: Context, out: Path, *,
             per_channel: bool) -> None:
    """U8S8 per channel with float weights, or ``quantize_static``'s defaults."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = [{source.input: images(source, 8, 1)[i : i + 4]} for i in (0, 4)]
    options: dict[str, Any] = ({"per_channel": True, "activation_type": QuantType.QUInt8,
                                "extra_options": {"AddQDQPairToWeight": True}}
                               if per_channel else {})
    quantize_static(preprocessed(subject, ctx)[0], str(out), CalibrationReader(batches),
                    quant_format=QuantFormat.QDQ, **options)


# --- the child process (torch) -----------------------------------------------------------

def _module(model: str) -> Any:
    if model == "digits_cnn":
        from onnxpress.models.train_digits import build_model

        return build_model("cnn")
    from onnxpress.models.zoo import ZOO

    return ZOO[model].build()


def _qat_model(source: Source) -> Any:
    """The module through FX-mode QAT, observers run, then frozen (eval)."""
    import torch
    from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    example = (torch.from_numpy(images(source, 2, 1)),)
    qat = prepare_qat_fx(_module(source.model).train(),
                         get_default_qat_qconfig_mapping("x86", version=0), example)
    with torch.no_grad():
        for start in (0, 4):
            qat(torch.from_numpy(images(source, 8, 1)[start : start + 4]))
    qat.apply(disable_observer)
    return qat.eval()


def _traceable_fake_quant(self: Any, x: Any) -> Any:
    """``FakeQuantize.forward`` with its observer off and fake-quant on, as plain calls."""
    import torch

    if self.is_per_channel:
        return torch.fake_quantize_per_channel_affine(
            x, self.scale, self.zero_point.int(), self.ch_axis, self.quant_min, self.quant_max)
    return torch.fake_quantize_per_tensor_affine(x, *self.frozen_qparams, self.quant_min,
                                                 self.quant_max)


def qat_export(model: str, target: str, dynamo: bool) -> None:
    import torch
    from torch.ao.quantization import FakeQuantize

    source, out = SOURCES[model], Path(target)
    qat, names = _qat_model(source), {"input_names": [source.input], "output_names": ["logits"]}
    if not dynamo:
        torch.onnx.export(qat, (torch.from_numpy(images(source, 2, 1)),), str(out),
                          dynamo=False, opset_version=17,
                          dynamic_axes={source.input: {0: "batch"}}, **names)
        return
    for module in qat.modules():
        if isinstance(module, FakeQuantize) and not module.is_per_channel:
            module.frozen_qparams = (float(module.scale), int(module.zero_point))
    with mock.patch.object(FakeQuantize, "forward", _traceable_fake_quant):
        for batch, path in ((1, _batch1(out)), (8, out)):
            torch.onnx.export(qat, (torch.from_numpy(images(source, batch, 1)),), str(path),
                              dynamo=True, opset_version=18, **names)
