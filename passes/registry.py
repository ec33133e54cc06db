"""Passes, presets and targets by name. A registry is an object (no module-level mutable
state): the default one holds the built-in passes plus those third parties declare under the
entry-point group ``onnxpress.passes`` (each entry point names a Pass subclass), the presets
and the targets' default pipelines.

Presets: one name for the recommended pipeline of a goal on a target.
``int8`` is cleanup (BatchNorm folded into the Convs, shape chains made constant), then
``quantize`` and ``fold-qdq``. On ``ort-cpu`` the transformer patterns are first fused into
ONNX Runtime's ops (``fuse-for-ort``: Attention, Gelu), activations are migrated into the
weights where that lowers the measured error (``smooth=0.75``, see ``quantize``: SmolLM2's
perplexity +15.6% at 0.5, +4.1% at 0.75), and the result is
lowered to integer operators (``lower-qdq``: QAttention, MatMulIntegerToFloat with its bias,
QLinearConv...; ``form=auto``, a rule: they ran as fast as the QDQ form, or faster, on every
model measured, and a rule keeps the output the same on every machine). Only what pays on
ONNX Runtime CPU is quantized there (the cost rule, ``quantize``'s ``cost`` and
``min_rows``, measured by ``benchmarks/suites/int8_cost.py``): a group of Convs stays float
when its estimated int8 saving is smaller than the Q/DQ at its edges (a lone small Conv
between float ops does not pay; a large one or a chain does), and so does a MatMul/Gemm with
fewer than 16 rows per sample (a vector product, such as a classifier head at batch 1); the
report counts them. Bias correction is off there: on real exports it helped little and hurt
more (PP-OCR's recogniser 0.9990 -> 0.9998 output cosine, but silero-vad 0.998 -> 0.947 and,
with other Conv groups in int8, PP-OCR's direction classifier 0.998 -> 0.984).
``fold=false`` because ``fold-qdq`` has just run (its second run, with ``int8_moves``, would
find nothing to move: the preset's activations are uint8). On ``tensorrt`` the input shapes
are made static, activations are symmetric int8, as its explicit-quantization mode requires,
the graph stays in standard QDQ form, and ``lint-tensorrt`` names what TensorRT would
refuse.

Options given to a preset go to its main pass: ``int8(observer=entropy)`` is
``quantize(observer=entropy)`` inside the preset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from onnxpress.errors import BadInputError
from onnxpress.passes.base import Pass
from onnxpress.passes.catalogue import BUILTIN_PASSES

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "onnxpress.passes"

#: target -> the pipeline it runs when no passes are given; the first is the default
TARGETS: Mapping[str, str] = MappingProxyType({
    "ort-cpu": "cleanup,fuse-for-ort",
    "tensorrt": "static-shapes,cleanup,lint-tensorrt",
})
DEFAULT_TARGET = next(iter(TARGETS))

#: preset -> (main pass, {target: pipeline})
PRESETS: Mapping[str, tuple[str, Mapping[str, str]]] = MappingProxyType({
    "int8": ("quantize", MappingProxyType({
        "ort-cpu": ("cleanup,fuse-for-ort(attention_bias=false),"
                    "quantize(smooth=0.75,cost=true,min_rows=16,bias_correction=false),"
                    "fold-qdq,lower-qdq(form=auto,fold=false)"),
        "tensorrt": ("static-shapes,cleanup,quantize(activations=int8,int32_bias=false,"
                     "grouped=true),fold-qdq,lint-tensorrt"),
    })),
    # half the channels of every Conv group, refit by least squares on the data: faster on
    # every CPU (int8 pays only where the CPU has fast integer kernels) and 3.8x smaller on
    # the digits CNN, 100% -> 98.44% top-1; what `onnxpress compile` runs on its own model
    "compress": ("prune", MappingProxyType({
        "ort-cpu": "cleanup,prune(ratio=0.5),fuse-for-ort",
        "tensorrt": "static-shapes,cleanup,prune(ratio=0.5),lint-tensorrt",
    })),
})


class PassRegistry:
    def __init__(self, passes: list[type[Pass]] | None = None, *,
                 presets: Mapping[str, tuple[str, Mapping[str, str]]] = PRESETS,
                 targets: Mapping[str, str] = TARGETS) -> None:
        self._passes: dict[str, type[Pass]] = {}
        self.presets = dict(presets)
        self.targets = dict(targets)
        for cls in passes or []:
            self.register(cls)

    def register(self, cls: type[Pass]) -> type[Pass]:
        if not cls.name:
            raise ValueError(f"{cls.__qualname__} has no name")
        if cls.name in self._passes and self._passes[cls.name] is not cls:
            raise ValueError(f"pass name {cls.name!r} is already registered")
        self._passes[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Pass]:
        try:
            return self._passes[name]
        except KeyError:
            known = ", ".join(self.names())
            raise BadInputError(f"unknown pass {name!r}; known passes: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._passes)

    def target_pipeline(self, target: str | None) -> str:
        """The pipeline ``target`` runs when no passes are given."""
        target = target or DEFAULT_TARGET
        if target not in self.targets:
            raise BadInputError(f"unknown target {target!r}; use one of {sorted(self.targets)}")
        return self.targets[target]

    @classmethod
    def default(cls) -> PassRegistry:
        registry = cls(list(BUILTIN_PASSES))
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.register(entry.load())
            except Exception as error:  # a broken plug-in must not break the built-ins
                logger.warning("skipping pass plug-in %s: %s", entry.name, error)
        return registry
