"""Variants of a model that other tools (and onnxpress's ``int8`` preset) build from its fp32
file: ``name -> Variant``. Every variant is *run* with the same session options.

- ``fp32``: the file, untouched;
- ``ort-opt``: the file ONNX Runtime saves after its full graph optimisation
  (``ORT_ENABLE_ALL`` + ``optimized_model_filepath``; may hold contrib ops, and is meant for
  the machine that wrote it). On the raw dynamo exports ORT's optimizer is not idempotent:
  the first pass folds the CastLike/Expand chains in front of BatchNormalization and Clip,
  only the second (when the saved file is loaded) fuses them, so ``ort-opt`` is "what ORT
  alone reaches";
- ``dynamic``: ``quantize_dynamic``, int8 (QInt8) weights, activations quantized at run time;
- ``qdq-u8s8`` / ``qdq-s8s8``: ``quantize_static``, QDQ, QUInt8 / QInt8 activations, QInt8
  per-channel weights, MinMax calibration;
- ``qop-u8s8``: the same in QOperator format (QLinearConv, QLinearMatMul, ...), fused offline;
- ``onnxpress-int8``: ``onnxpress.compile(fp32, "int8", calibration=batches)``.

The quantized ORT variants start from ``quant_pre_process``'s output (ONNX Runtime
recommends it; without its constant folding the dynamo exports keep ``Transpose(weight)``
before MatMul, which ``quantize_dynamic`` then leaves in fp32). The raw dynamo exports
compute Conv biases as ``Expand(CastLike(0, x), Shape(w))``, which the QOperator quantizers
reject; those retry on the export after onnxpress's ``cleanup`` and say so in a note.

Files from other tools are cached (keyed by the tool's version); onnxpress's variants are
built again every run, since the code under test is what changes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

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

from .cache import Entry, version_tag
from .subjects import Batch, Subject
from .suite import Context, Unavailable, first_line

Builder = Callable[[Subject, Path, Context], dict[str, Any] | None]  # writes the path


@dataclasses.dataclass(frozen=True)
class Variant:
    build: Builder | None  # None: the fp32 file itself
    producer: str = "onnxruntime"  # its version keys the cache; "onnxpress": never cached
    install: str = ""  # how to install the producer, for the row of a machine without it


def variant_file(subject: Subject, name: str, variant: Variant, ctx: Context) -> Entry:
    """The variant's file for ``subject``: the fp32 file, a cached build, or a fresh one."""
    if variant.build is None:
        return Entry(subject.fp32, {"notes": []}, cached=True)
    build = variant.build
    if variant.producer == "onnxpress":
        import time

        path = ctx.folder(subject.name) / f"{name}.onnx"
        started = time.perf_counter()
        meta = dict(build(subject, path, ctx) or {})
        return Entry(path, {**meta, "build_s": time.perf_counter() - started}, cached=False)
    try:
        tag = f"{variant.producer}{version(variant.producer)}"
    except PackageNotFoundError:
        raise Unavailable(f"{variant.producer} is not installed ({variant.install})") from None
    key = (subject.name, name, tag)
    return ctx.cache.file(key, lambda path: build(subject, path, ctx))


class CalibrationReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over a list of batches."""

    def __init__(self, batches: list[Batch]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._batches, None)


def preprocessed(subject: Subject, ctx: Context) -> tuple[Path, list[str]]:
    """``quant_pre_process``'s output, built once per model (cached) and its notes.

    Symbolic shape inference fails on the dynamo exporter's ``Constant(value_ints)`` nodes,
    so it is retried without; should that fail too, the fp32 file is used as it is. Either
    way, value_info entries of initializers are dropped: ``quantize_dynamic`` transposes Gemm
    weights and its strict shape inference would then reject the stale shapes."""
    def build(path: Path) -> dict[str, Any]:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        failed, tmp = [], path.with_name(f"{path.stem}.tmp.onnx")
        for what, skip in (("", False), (" without symbolic shape inference", True)):
            tmp.unlink(missing_ok=True)  # a failed try may leave half a file
            try:
                quant_pre_process(subject.fp32, tmp, skip_symbolic_shape=skip)
                break
            except Exception as error:  # noqa: BLE001 - ORT's tools raise anything
                failed.append(f"quant_pre_process{what} failed ({first_line(error, 200)})")
        else:
            tmp.unlink(missing_ok=True)
        after = "pre-processed without it" if len(failed) == 1 else "quantized the raw fp32"
        notes = ["; ".join([*failed, after])] if failed else []
        model = onnx.load(str(tmp if tmp.exists() else subject.fp32))
        weights = {init.name for init in model.graph.initializer}
        keep = [info for info in model.graph.value_info if info.name not in weights]
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)
        onnx.save(model, str(path))
        tmp.unlink(missing_ok=True)
        return {"notes": notes}

    entry = ctx.cache.file((subject.name, "pre", version_tag("onnxruntime")), build)
    return entry.path, list(entry.meta["notes"])


def cleaned(subject: Subject, ctx: Context) -> Path:
    """The export after onnxpress's ``cleanup`` (constants and BatchNorm folded, shape chains
    constant): the fallback input of the quantizers that fail on the raw export."""
    import onnxpress

    out = ctx.folder(subject.name) / "fp32.cleanup.onnx"
    if not out.exists():
        onnxpress.save(onnxpress.compile(subject.fp32, "cleanup", progress=False), out)
    return out


def loads(path: Path) -> None:
    """Raise what ONNX Runtime says if it cannot load ``path``."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def on_cleaned_if_failing(builder: Builder, what: str) -> Builder:
    """``builder``, retried on :func:`cleaned` (with a note) when it fails on the export or
    writes a file ONNX Runtime cannot load."""
    def build(subject: Subject, path: Path, ctx: Context) -> dict[str, Any]:
        try:
            meta = dict(builder(subject, path, ctx) or {})
            loads(path)
            return meta
        except Unavailable:
            raise
        except Exception as error:  # noqa: BLE001 - retried on the cleaned model below
            failure = first_line(error, 200)
        path.unlink(missing_ok=True)
        meta = dict(builder(dataclasses.replace(subject, fp32=cleaned(subject, ctx)), path, ctx)
                    or {})
        note = f"{what} failed on the export ({failure}); quantized it after `cleanup` instead"
        return {**meta, "notes": [*meta.get("notes", []), note]}

    return build


def _ort_opt(subject: Subject, path: Path, ctx: Context) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the NCHWc "hardware specific" warning is expected
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(subject.fp32), options, providers=["CPUExecutionProvider"])


def _dynamic(subject: Subject, path: Path, ctx: Context) -> dict[str, Any]:
    source, notes = preprocessed(subject, ctx)
    quantize_dynamic(source, path, weight_type=QuantType.QInt8)
    return {"notes": notes}


def _static(form: QuantFormat, activations: QuantType) -> Builder:
    def build(subject: Subject, path: Path, ctx: Context) -> dict[str, Any]:
        source, notes = preprocessed(subject, ctx)
        quantize_static(source, path, CalibrationReader(subject.calibration), quant_format=form,
                        activation_type=activations, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax)
        return {"notes": notes}

    return build


def pipeline(passes: str, target: str | None = None) -> Builder:
    """onnxpress's ``passes`` (for ``target``) on the fp32 file, calibrated on the same
    batches as the other quantizers; the report's notes on how ``lower-qdq`` chose its
    form, where it did."""
    def build(subject: Subject, path: Path, ctx: Context) -> dict[str, Any]:
        import onnxpress

        model, report = onnxpress.compile(subject.fp32, passes, target=target,
                                          calibration=subject.calibration, progress=False,
                                          return_report=True)
        onnxpress.save(model, path)
        notes = [f"lower-qdq chose {r.stats['form']}" + (
                     f" (qdq {r.stats['qdq_ms']} ms, qoperator {r.stats['qoperator_ms']} ms)"
                     if "qdq_ms" in r.stats else " (form=auto's rule)")
                 for r in report.passes if r.name == "lower-qdq" and "form" in r.stats]
        return {"notes": notes}

    return build


BUILT_IN: dict[str, Variant] = {
    "fp32": Variant(None),
    "ort-opt": Variant(_ort_opt),
    "dynamic": Variant(_dynamic),
    "qdq-u8s8": Variant(_static(QuantFormat.QDQ, QuantType.QUInt8)),
    "qdq-s8s8": Variant(_static(QuantFormat.QDQ, QuantType.QInt8)),
    "qop-u8s8": Variant(on_cleaned_if_failing(_static(QuantFormat.QOperator, QuantType.QUInt8),
                                              "quantize_static (QOperator)")),
    "onnxpress-int8": Variant(pipeline("int8"), producer="onnxpress"),
}
