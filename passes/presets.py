"""Pipeline presets: one name for the recommended pipeline of a goal on a target.

``int8`` is cleanup (BatchNorm folded into the Convs, shape chains made constant), then
``quantize`` and ``fold-qdq``. On ``ort-cpu`` the transformer patterns are first fused into
ONNX Runtime's ops (``fuse-for-ort``: Attention, Gelu), activations are migrated into the
weights where that lowers the error (``smooth=0.5``, see ``quantize``), and the result is
lowered to integer operators (``lower-qdq``: QAttention, MatMulIntegerToFloat with its bias,
QLinearConv...), which ORT runs as fast as or faster than its own QDQ fusion (measured on
ResNet-50, DeiT-S, MiniLM). On ``tensorrt`` activations are symmetric int8, as its
explicit-quantization mode requires, and the graph stays in standard QDQ form.

Options given to a preset go to its main pass: ``int8(calibration=entropy)`` is
``quantize(calibration=entropy)`` inside the preset.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxpress.errors import BadInputError
from onnxpress.passes.pipeline import PassSpec, split_pipeline

#: preset -> (main pass, {target: pipeline})
PRESETS: dict[str, tuple[str, dict[str, str]]] = {
    "int8": ("quantize", {
        "ort-cpu": ("cleanup,fuse-for-ort(attention_bias=false),quantize(smooth=0.5),"
                    "fold-qdq,lower-qdq"),
        "tensorrt": "cleanup,quantize(activations=int8),fold-qdq(int8_moves=true)",
    }),
}


def expand_presets(specs: Sequence[PassSpec], target: str) -> list[PassSpec]:
    expanded: list[PassSpec] = []
    for spec in specs:
        if spec.name not in PRESETS:
            expanded.append(spec)
            continue
        main, pipelines = PRESETS[spec.name]
        if target not in pipelines:
            raise BadInputError(f"preset {spec.name!r} has no pipeline for target {target!r}; "
                                f"targets: {', '.join(pipelines)}")
        for inner in split_pipeline(pipelines[target]):
            params = {**inner.params, **spec.params} if inner.name == main else inner.params
            expanded.append(PassSpec(inner.name, params))
    return expanded
