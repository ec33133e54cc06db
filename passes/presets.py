"""Pipeline presets: one name for the recommended pipeline of a goal on a target.

``int8`` is cleanup (BatchNorm folded into the Convs, shape chains made constant), then
``quantize`` and ``fold-qdq``. On ``ort-cpu`` the transformer patterns are first fused into
ONNX Runtime's ops (``fuse-for-ort``: Attention, Gelu), activations are migrated into the
weights where that lowers the error (``smooth=0.5``, see ``quantize``), and the result is
lowered to integer operators (``lower-qdq``: QAttention, MatMulIntegerToFloat with its bias,
QLinearConv...) unless the QDQ form measures faster on the machine that compiles
(``form=auto``; ORT fuses many QDQ groups itself). On ``tensorrt`` the input shapes are
made static, activations are symmetric int8, as its explicit-quantization mode requires,
the graph stays in standard QDQ form, and ``lint-tensorrt`` names what TensorRT would
refuse.

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
                    "fold-qdq,lower-qdq(form=auto)"),
        "tensorrt": ("static-shapes,cleanup,quantize(activations=int8,int32_bias=false),"
                     "fold-qdq,lint-tensorrt"),
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
