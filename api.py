"""The Python API the CLI wraps: compile, inspect, compare, bench."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxpress.backends.bench import bench_models
from onnxpress.backends.files import writable
from onnxpress.backends.inputs import ModelInputs
from onnxpress.backends.opset_upgrade import upgrade
from onnxpress.backends.ort_optimize import providers
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import BadInputError, CheckFailedError, RuntimeRefusedError
from onnxpress.frontends.external_data import model_files
from onnxpress.frontends.onnx_loader import ModelSource, load
from onnxpress.ir.agreement import sample_cosines
from onnxpress.ir.analysis import count_nodes, count_parameters, parameter_bytes
from onnxpress.ir.marks import LOAD_NOTES
from onnxpress.models.datasets import is_dataset, load_dataset
from onnxpress.passes.calibration_data import Batch, CalibrationData
from onnxpress.passes.manager import PassManager
from onnxpress.passes.pipeline import build, expand_presets, load_config, split_pipeline
from onnxpress.passes.registry import PassRegistry
from onnxpress.passes.report import Report


def compile(  # noqa: A001 - the public name DESIGN.md promises
    model: ModelSource,
    passes: str | Sequence[Any] | None = None,
    *,
    config: str | os.PathLike | None = None,
    target: str | None = None,
    calibration: str | os.PathLike | Iterable[Batch] | CalibrationData | None = None,
    report: str | os.PathLike | None = None,
    check: bool = False,
    tolerance: float = 1e-4,
    atol: float = 1e-6,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    dims: dict[str, int] | None = None,
    verify: bool = True,
    registry: PassRegistry | None = None,
    progress: bool | None = None,
    return_report: bool = False,
    opset: int | None = None,
    keep_initializer_inputs: bool = False,
) -> ir.Model | tuple[ir.Model, Report]:
    """Load ``model`` (unless it is already IR), run the pipeline in place, return it.

    ``passes`` is a pipeline string or a list of Pass instances; else ``config``'s; else the
    ``target``'s default pipeline (``ort-cpu`` when nothing is said). ``check`` compares the
    outputs with the input model's on ``calibration`` data (or random inputs shaped by
    ``input_shapes`` and ``dims``) and raises CheckFailedError where an output's max |diff|
    exceeds ``atol`` + ``tolerance`` x its largest magnitude; the report is written first
    either way.
    ``opset`` and ``keep_initializer_inputs`` are ``load``'s, applied once, here.
    """
    registry = registry or PassRegistry.default()
    settings = load_config(config) if config is not None else None
    if settings is not None:  # explicit arguments win over the config's
        target = target if target is not None else settings.target
        verify = verify and settings.verify
    default_pipeline = registry.target_pipeline(target)  # an unknown target: one line, exit 2
    if passes is None and settings is not None:
        pass_list = build(expand_presets(settings.passes, registry, target), registry)
    elif passes is None or isinstance(passes, str):
        text = passes or default_pipeline
        pass_list = build(expand_presets(split_pipeline(text), registry, target), registry)
    else:
        pass_list = list(passes)
    if settings is not None:
        check = check or settings.check
        calibration = calibration if calibration is not None else settings.calibration
    reading = job_inputs(model, calibration, config)
    if report is not None:  # before any work: never over a file this job reads
        writable(report, reading=reading, what="report")
    data = _calibration(calibration)
    ir_model = load(model, keep_initializer_inputs=keep_initializer_inputs)
    if opset is not None:  # verified on the calibration data where there is some
        bound = data.for_model(ModelInputs.of(ir_model)) if data is not None else None
        ir_model.meta.setdefault(LOAD_NOTES, []).append(upgrade(ir_model, opset, bound))
    manager = PassManager(pass_list, verify=verify, check=check, check_data=data,
                          tolerance=tolerance, atol=atol, input_shapes=input_shapes,
                          dims=dims, progress=progress, registry=registry, target=target)
    result = manager.run(ir_model)
    if report is not None:
        result.write(report, reading=reading)
    if result.check_failed:
        worst = max((c for c in result.check or [] if not c.ok), key=lambda c: c.max_rel)
        raise CheckFailedError(
            f"numeric check failed: output {worst.name!r} differs by {worst.max_abs:.3g} "
            f"({worst.max_rel:.3g} of its largest magnitude) > atol {atol:g} + "
            f"{tolerance:g} relative; see the report for the pass list"
        )
    return (ir_model, result) if return_report else ir_model


#: samples per batch when a named or encoder data set serves as sample inputs
DATASET_BATCH = 16


def _calibration(source) -> CalibrationData | None:
    """Sample inputs from a CalibrationData source, or from a data set (``digits``,
    ``minilm-texts``, an .npz with ``reference``) whose labels and reference embeddings are
    not model inputs and must not be fed."""
    if source is None or isinstance(source, CalibrationData):
        return source
    if is_dataset(source):
        return CalibrationData(list(load_dataset(os.fspath(source)).batches(DATASET_BATCH)))
    return CalibrationData(source)


def job_inputs(model: Any, calibration: Any = None, config: Any = None) -> list[Path]:
    """The files a compile of ``model`` reads, which none of its outputs may overwrite: the
    model file and its external data, the calibration file (or a folder's files) and the
    config file, where they are given as paths."""
    files: list[Path] = []
    if isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        files += model_files(Path(model))
    for given in (calibration, config):
        if isinstance(given, (str, os.PathLike)) and Path(given).exists():
            path = Path(given)
            files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() \
                else [path]
    return files


def inspect(model: ModelSource) -> dict[str, Any]:
    """Ops, parameters, size, opsets, inputs and outputs."""
    ir_model = load(model, keep_initializer_inputs=True)
    ops = collections.Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in ir_model.graph.all_nodes()
    )

    def describe(value: ir.Value) -> dict[str, Any]:
        dims = None if value.shape is None else [
            d if isinstance(d, int) else str(d) for d in value.shape.dims
        ]
        return {"name": value.name, "dtype": str(value.dtype), "shape": dims}

    return {
        "ir_version": ir_model.ir_version,
        "producer": f"{ir_model.producer_name or ''} {ir_model.producer_version or ''}".strip(),
        "opsets": dict(ir_model.opset_imports),
        "nodes": count_nodes(ir_model),
        "parameters": count_parameters(ir_model),
        "weight_bytes": parameter_bytes(ir_model),
        "ops": dict(ops.most_common()),
        "inputs": [describe(v) for v in ir_model.graph.inputs],
        "outputs": [describe(v) for v in ir_model.graph.outputs],
    }


def compare(
    a: ModelSource,
    b: ModelSource,
    data: str | os.PathLike | Iterable[Batch] | CalibrationData | None = None,
    *,
    batches: int = 4,
    provider: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    dims: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Per output of A: max |a-b|, mean cosine per sample, top-1 agreement (argmax over
    the last axis, for float outputs of rank >= 2), over ``batches`` batches of ``data``: a
    named data set (batches of ``DATASET_BATCH``), .npz file or folder, or batches; random
    inputs shaped by ``input_shapes`` and ``dims`` when None. ``provider``: ONNX Runtime
    execution providers, e.g. ``"cuda"`` (CPU is the fallback)."""
    chosen = providers(provider)
    model_a = load(a, keep_initializer_inputs=True)
    inputs = ModelInputs.of(model_a, input_shapes)
    inputs.check_dims(dims or {})
    runner_a, runner_b = (Runner(_runnable(m), providers=chosen) for m in (a, b))
    dataset = _calibration(data)
    feeds = (dataset.for_model(inputs).take(batches) if dataset is not None
             else [inputs.random(seed=s, dims=dims) for s in range(batches)])
    totals: dict[str, dict[str, list[float]]] = {}
    for feed in feeds:
        out_a, out_b = (_run(runner, feed, label, source)
                        for runner, label, source in ((runner_a, "A", a), (runner_b, "B", b)))
        for name, x in out_a.items():
            if name not in out_b:
                raise BadInputError(f"model B has no output named {name!r}")
            _accumulate(totals.setdefault(name, {"abs": [], "cos": [], "top1": []}), x, out_b[name])
    return [
        {
            "output": name,
            "max_abs": max(t["abs"]),
            "cosine": float(np.mean(t["cos"])),
            "top1_agreement": float(np.mean(t["top1"])) if t["top1"] else None,
        }
        for name, t in totals.items()
    ]


def _run(runner: Runner, feed: Batch, label: str, source: ModelSource) -> dict:
    try:
        return runner.run(feed)
    except RuntimeRefusedError as error:
        shown = source if isinstance(source, (str, os.PathLike)) else "given"
        raise BadInputError(f"model {label} ({shown}): {error}") from None


def _accumulate(total: dict[str, list[float]], x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise BadInputError(f"output shapes differ: {x.shape} vs {y.shape}")
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    total["abs"].append(float(np.abs(xf - yf).max()) if x.size else 0.0)
    total["cos"].extend(sample_cosines(xf, yf).tolist())
    if x.ndim >= 2 and np.issubdtype(x.dtype, np.floating):
        total["top1"].extend((x.argmax(-1) == y.argmax(-1)).ravel().astype(float).tolist())


def _runnable(model: ModelSource):
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise BadInputError(f"{path}: no such file; check the model path")
        load(path)  # one-line errors for corrupt files before ONNX Runtime sees them
        return os.fspath(path)
    return load(model)


def bench(
    models: Sequence[ModelSource],
    *,
    threads: int = 2,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    progress: bool | None = None,
    provider: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    dims: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Median latency per model, measured interleaved in one run, on ``provider`` (ONNX
    Runtime execution providers, e.g. ``"cuda"``; CPU when None), on random inputs shaped
    by ``input_shapes`` and ``dims``."""
    from dataclasses import asdict

    labelled = [
        (os.fspath(m) if isinstance(m, (str, os.PathLike)) else f"model{i}", _runnable(m))
        for i, m in enumerate(models)
    ]
    rows = bench_models(labelled, threads=threads, batch=batch, repeats=repeats,
                        warmup=warmup, progress=progress, provider=provider,
                        input_shapes=input_shapes, dims=dims)
    return [asdict(row) for row in rows]
