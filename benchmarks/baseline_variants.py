"""The baseline suite's variants: name -> builder(fp32_path, out_path, calibration) -> path.

A builder turns the exported fp32 file into the variant's file and returns its path (the
suite caches it). Later suites register their own variants (onnxpress passes) with
:func:`register`; a builder may call ``warnings.warn(BuildNote(...))`` to leave a note in the
results (a fallback it took, say) instead of failing.

What the built-in variants are (every one is *run* with the same session options; see
``run.py``):

- ``fp32``: the exported file, untouched;
- ``ort-opt``: the file ONNX Runtime saves after its full graph optimisation
  (``ORT_ENABLE_ALL`` + ``optimized_model_filepath``). It may hold contrib ops, and ORT
  warns that an ENABLE_ALL file is meant for the machine that wrote it;
- ``dynamic``: ``quantize_dynamic``, int8 weights (QInt8), on the pre-processed model;
- ``qdq-u8s8`` / ``qdq-s8s8``: ``quantize_static`` in QDQ format, activations QUInt8 /
  QInt8, weights QInt8 per channel, MinMax calibration, on the pre-processed model.

Pre-processing is ``quant_pre_process``; ONNX Runtime recommends it, and without its constant
folding the dynamo exports keep ``Transpose(weight)`` in front of MatMul, which
``quantize_dynamic`` then leaves in fp32.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

Batch = dict[str, np.ndarray]


class BuildNote(UserWarning):
    """Something a builder wants the results to say (a fallback it took)."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibration batches for static quantization, and where they come from (for the JSON)."""

    batches: list[Batch]
    source: str


VariantBuilder = Callable[[Path, Path, Calibration], Path]
VARIANTS: dict[str, VariantBuilder] = {}


def register(name: str) -> Callable[[VariantBuilder], VariantBuilder]:
    def add(builder: VariantBuilder) -> VariantBuilder:
        VARIANTS[name] = builder
        return builder

    return add


@register("fp32")
def fp32(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
    return fp32_path


@register("ort-opt")
def ort_optimized(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the NCHWc "hardware specific" warning is expected
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out_path)
    ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    return out_path


@register("dynamic")
def dynamic(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
    quantize_dynamic(preprocessed(fp32_path), out_path, weight_type=QuantType.QInt8)
    return out_path


def _qdq(activations: QuantType) -> VariantBuilder:
    def build(fp32_path: Path, out_path: Path, calibration: Calibration) -> Path:
        quantize_static(
            preprocessed(fp32_path), out_path, _Reader(calibration),
            quant_format=QuantFormat.QDQ, activation_type=activations,
            weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return out_path

    return build


register("qdq-u8s8")(_qdq(QuantType.QUInt8))
register("qdq-s8s8")(_qdq(QuantType.QInt8))


class _Reader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over a Calibration's batches."""

    def __init__(self, calibration: Calibration) -> None:
        self._batches = iter(calibration.batches)

    def get_next(self) -> Batch | None:
        return next(self._batches, None)


def preprocessed(fp32_path: Path) -> Path:
    """``quant_pre_process`` output next to ``fp32_path``, built once and shared by the
    quantized variants.

    Symbolic shape inference fails on the dynamo exporter's ``Constant(value_ints)`` nodes, so
    it is retried without; should that fail too, the fp32 file is used as it is. Either way,
    value_info entries of initializers are dropped: ``quantize_dynamic`` transposes Gemm
    weights and its strict shape inference would then reject the stale shapes.
    """
    out = fp32_path.with_name(f"{fp32_path.stem}.pre.onnx")
    notes = out.with_suffix(".notes")
    if not out.exists():
        tmp = out.with_name(f"{fp32_path.stem}.pre.tmp.onnx")
        said = _preprocess(fp32_path, tmp)
        _drop_initializer_value_info(tmp, out)
        tmp.unlink()
        notes.write_text("\n".join(said))
    for line in notes.read_text().splitlines() if notes.exists() else []:
        warnings.warn(BuildNote(line), stacklevel=2)
    return out


def _preprocess(source: Path, target: Path) -> list[str]:
    try:
        quant_pre_process(source, target)
        return []
    except Exception as error:  # noqa: BLE001 - ORT's tools raise anything
        first = f"quant_pre_process: symbolic shape inference failed ({_first_line(error)})"
    try:
        quant_pre_process(source, target, skip_symbolic_shape=True)
        return [f"{first}; pre-processed without it"]
    except Exception as error:  # noqa: BLE001
        target.write_bytes(source.read_bytes())
        return [f"{first}; without it failed too ({_first_line(error)}); quantized the raw fp32"]


def _drop_initializer_value_info(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    weights = {init.name for init in model.graph.initializer}
    keep = [info for info in model.graph.value_info if info.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    onnx.save(model, str(target))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
