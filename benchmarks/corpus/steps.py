"""The steps every corpus model goes through, each ending "ok" with its numbers or "refused"
with onnxpress's one-line reason; anything else (an internal error, an invalid output
written with success) is a failure of ours and the row says so.

- ``round-trip``: load, save, outputs bit-identical in ONNX Runtime;
- ``default``: the ort-cpu target's pipeline with ``--check`` on the recipe's inputs;
- ``int8``: the preset with the recipe as calibration; output cosine against fp32, layers
  quantized (If branches included) and kept float by its cost rule (``not_paying``), size,
  and latency against the fp32 compile (interleaved medians); ``int8-all``: the same with
  the cost rule off (every Conv, MatMul and Gemm quantized), for the accuracy and the speed
  that rule weighs;
- ``prune``: ``cleanup,prune(structure=channel,ratio=0.3)``; ``lowrank``:
  ``cleanup,lowrank(ratio=0.5)``; parameters kept, output shapes, cosine;
- ``tensorrt``: the tensorrt target's pipeline, its lint findings.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import onnxpress
from onnxpress.backends.bench import bench_models
from onnxpress.backends.inputs import ModelInputs
from onnxpress.backends.ort_runner import Runner
from onnxpress.errors import InternalError, OnnxpressError
from onnxpress.ir.agreement import sample_cosines
from onnxpress.passes.report import Report

STEPS = ("round-trip", "default", "int8", "int8-all", "prune", "lowrank", "tensorrt")
#: the int8 preset without its cost rule: every layer quantized, with the quantize pass's
#: bias correction (which full int8 of PP-OCR's recogniser needs: cosine 0.967 -> 0.998)
ALL_LAYERS = "int8(cost=false,grouped=true,min_rows=0,bias_correction=true)"
QUANTIZED_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
                 "MatMulIntegerToFloat", "QAttention", "DequantizeLinear")


@dataclasses.dataclass
class Outcome:
    status: str  # ok, refused, check failed, internal error
    detail: str = ""
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Job:
    """One model's files: the original, the recipe's inputs as an .npz, a work folder."""

    name: str
    path: Path
    data: Path
    work: Path
    repeats: int = 10

    def feeds(self) -> list[dict[str, np.ndarray]]:
        inputs = ModelInputs.of(onnxpress.load(self.path))
        data = onnxpress.CalibrationData(self.data).for_model(inputs)
        return list(data)[:4]


def run(step: str, job: Job) -> Outcome:
    """One step, its failures sorted into refusals (exit 2, one line) and ours."""
    try:
        return _STEPS[step](job)
    except InternalError as error:
        return Outcome("internal error", str(error).splitlines()[0])
    except OnnxpressError as error:
        text = str(error)
        kind = "check failed" if error.exit_code == 1 else "refused"
        return Outcome(kind, text.splitlines()[0] if text else type(error).__name__)
    except Exception as error:  # noqa: BLE001 - any other failure is a bug of ours
        return Outcome("internal error", f"{type(error).__name__}: {str(error)[:200]}")


def _outputs(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    runner = Runner(model)
    return [runner.run(feed) for feed in feeds]


def _agreement(reference: list[dict], candidate: list[dict]) -> dict[str, float]:
    """The worst output's mean per-sample cosine, and whether every shape matched."""
    worst, shapes = 1.0, True
    for want, got in zip(reference, candidate):
        for name, a in want.items():
            b = got.get(name)
            if b is None or b.shape != a.shape:
                shapes = False
                continue
            if np.issubdtype(a.dtype, np.floating):
                worst = min(worst, float(np.mean(sample_cosines(a, b))))
    return {"cosine": round(worst, 6), "same_shapes": shapes}


def _compile(job: Job, label: str, passes: str | None, **options: Any
             ) -> tuple[Path, Report]:
    out = job.work / f"{job.name}.{label}.onnx"
    model, report = onnxpress.compile(job.path, passes, return_report=True, **options)
    onnxpress.save(model, out)
    onnx.checker.check_model(str(out))  # the written file, as a user gets it
    return out, report


def _round_trip(job: Job) -> Outcome:
    out = job.work / f"{job.name}.roundtrip.onnx"
    onnxpress.save(onnxpress.load(job.path, keep_initializer_inputs=True), out)
    feeds = job.feeds()
    same = all(all(np.array_equal(a[k], b[k]) for k in a)
               for a, b in zip(_outputs(str(job.path), feeds), _outputs(str(out), feeds)))
    if not same:
        return Outcome("internal error", "round trip changed the outputs")
    return Outcome("ok", "bit-identical", {"mb": _mb(out)})


def _default(job: Job) -> Outcome:
    out, report = _compile(job, "default", None, calibration=job.data, check=True)
    worst = max(report.check or [], key=lambda c: c.max_rel)
    return Outcome("ok", f"check ok, rel {worst.max_rel:.1e}",
                   {"nodes": _nodes(report), "mb": _mb(out)})


def _int8(passes: str) -> Callable[[Job], Outcome]:
    def step(job: Job) -> Outcome:
        return _quantized(job, passes.split("(")[0] + ("-all" if "(" in passes else ""),
                          passes)
    return step


def _quantized(job: Job, label: str, passes: str) -> Outcome:
    fp32, _ = _compile(job, "fp32", None)
    out, report = _compile(job, label, passes, calibration=job.data)
    kinds = collections.Counter(n.op_type for n in onnxpress.load(out).graph.all_nodes())
    quantized = sum(kinds[op] for op in QUANTIZED_OPS)
    feeds = job.feeds()
    agreement = _agreement(_outputs(str(fp32), feeds), _outputs(str(out), feeds))
    rows = bench_models([("fp32", str(fp32)), ("int8", str(out))], repeats=job.repeats,
                        warmup=2, progress=False, feeds=feeds[0])
    speedup = rows[0].median_ms / rows[1].median_ms
    quantize = next(p for p in report.passes if p.name == "quantize")
    notes = [n for p in report.passes for n in p.notes if n.startswith("warning:")]
    return Outcome("ok", notes[0] if notes else "", {
        "layers": quantize.stats.get("nodes", 0),
        "not_paying": quantize.stats.get("kept_float", 0),
        "quantized_ops": quantized, **agreement,
        "speedup": round(speedup, 2), "mb": _mb(out), "fp32_mb": _mb(fp32)})


def _structural(passes: str) -> Callable[[Job], Outcome]:
    def step(job: Job) -> Outcome:
        label = passes.split(",")[1].split("(")[0]
        out, report = _compile(job, label, passes, calibration=job.data)
        feeds = job.feeds()
        agreement = _agreement(_outputs(str(job.path), feeds), _outputs(str(out), feeds))
        before, after = report.passes[0].parameters_after, report.passes[-1].parameters_after
        notes = [n for n in report.passes[-1].notes if "nothing" in n or "no " in n[:3]]
        return Outcome("ok" if agreement["same_shapes"] else "internal error",
                       notes[0][:160] if before == after and notes else "",
                       {"params_kept": round(after / max(before, 1), 3), **agreement})
    return step


def _tensorrt(job: Job) -> Outcome:
    out, report = _compile(job, "tensorrt", None, target="tensorrt", calibration=job.data)
    lint = next((p for p in report.passes if p.name == "lint-tensorrt"), None)
    found = lint.stats.get("violations", 0) if lint is not None else 0
    return Outcome("ok", f"{found} lint findings", {"nodes": _nodes(report), "mb": _mb(out)})


def _nodes(report: Report) -> str:
    return f"{report.passes[0].nodes_before}->{report.passes[-1].nodes_after}"


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


_STEPS: Mapping[str, Callable[[Job], Outcome]] = {
    "round-trip": _round_trip,
    "default": _default,
    "int8": _int8("int8"),
    "int8-all": _int8(ALL_LAYERS),
    "prune": _structural("cleanup,prune(structure=channel,ratio=0.3)"),
    "lowrank": _structural("cleanup,lowrank(ratio=0.5)"),
    "tensorrt": _tensorrt,
}
