"""The baseline suite's driver: per model, prepare -> build variants -> probe -> time -> quality.

Steps run model by model (a model's variants are timed interleaved with each other, never
with another model's), the JSON is rewritten after every model, and whatever fails (an
export, a quantizer, a session) becomes an error in that variant's row while the suite goes
on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from baseline_export import Prepared, prepare
from baseline_measure import Timing, agreement, dataset_metric, probe, time_variants
from baseline_report import write_json
from baseline_variants import VARIANTS, BuildNote
from tqdm import tqdm

SESSION = ("every variant runs with the same session options: ORT_ENABLE_ALL (ONNX Runtime's "
           "default), intra_op={threads}, inter_op=1, sequential execution, CPU provider")


@dataclasses.dataclass
class SuiteOptions:
    models: list[str]
    variants: list[str]
    cache: Path
    json_path: Path
    threads: int = 2
    seconds: float = 20.0  # timing budget per model, shared by batch 1 and batch 8
    repeats: int | None = None  # fixed rounds instead of the budget
    fresh: bool = False


class Progress:
    """One line per step (and a tqdm bar on a terminal)."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, unit="step", disable=None, leave=False)
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def step(self, model: str, what: str) -> Iterator[dict[str, str]]:
        self.bar.set_description(f"{model}: {what}")
        began, said = time.perf_counter(), {"text": ""}
        try:
            yield said
        finally:
            self.bar.update(1)
            tqdm.write(f"[{time.perf_counter() - self.start:5.0f}s] {model:<13} {what:<16} "
                       f"{time.perf_counter() - began:6.1f}s  {said['text']}")


def run_suite(options: SuiteOptions) -> dict[str, Any]:
    results: dict[str, Any] = {"config": _config(options), "models": {}, "rows": []}
    progress = Progress(len(options.models) * (2 * len(options.variants) + 4))
    for name in options.models:
        folder = options.cache / name
        if options.fresh:
            shutil.rmtree(folder, ignore_errors=True)
        rows, info = _run_model(name, folder, options, progress)
        results["models"][name] = info
        results["rows"].extend(rows)
        results["config"]["wall_s"] = time.perf_counter() - progress.start
        write_json(results, options.json_path)
    progress.bar.close()
    return results


def _run_model(name: str, folder: Path, options: SuiteOptions,
               progress: Progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = {v: {"model": name, "variant": v, "status": "ok", "error": None, "notes": []}
            for v in options.variants}
    model, failure = None, ""
    with progress.step(name, "prepare") as said:
        try:
            model = prepare(name, folder)
            said["text"] = f"fp32 {_mb(model.fp32):.1f} MB"
        except Exception as error:  # noqa: BLE001 - any failure becomes the rows' error
            failure = _line(error)
            said["text"] = f"FAILED: {failure}"
    if model is None:
        progress.bar.update(2 * len(options.variants) + 3)
        for row in rows.values():
            row.update(status="error", error=f"prepare: {failure}")
        return list(rows.values()), {"error": failure}
    paths = _build_all(model, rows, progress)
    outputs = _probe_all(model, paths, rows, options.threads, progress)
    _time_all(model, paths, rows, options, progress)
    with progress.step(name, "quality") as said:
        said["text"] = _quality(model, paths, rows, outputs)
    _ratios(rows)
    return list(rows.values()), {**model.info, "eval_data": model.eval_data}


def _build_all(model: Prepared, rows: dict[str, dict[str, Any]],
               progress: Progress) -> dict[str, Path]:
    paths = {}
    for variant, row in rows.items():
        with progress.step(model.name, f"build {variant}") as said:
            try:
                path, meta = _build(model, variant)
                paths[variant] = path
                row.update(file=os.fspath(path), size_mb=_mb(path), **meta)
                said["text"] = (f"{row['size_mb']:.1f} MB" + (" (cached)" if meta["cached"] else "")
                                + "".join(f"; note: {n}" for n in meta["notes"]))
            except Exception as error:  # noqa: BLE001
                row.update(status="error", error=f"build: {_line(error)}")
                said["text"] = f"FAILED: {_line(error)}"
    return paths


def _build(model: Prepared, variant: str) -> tuple[Path, dict[str, Any]]:
    """The variant's file, built by its registered builder unless cached (``VARIANT.json``
    is written after the file, so an interrupted build is not taken for a cached one)."""
    folder = model.fp32.parent
    meta_path = folder / f"{variant}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (folder / meta["file"]).is_file():
            return folder / meta.pop("file"), {**meta, "cached": True}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BuildNote)
        path = Path(VARIANTS[variant](model.fp32, folder / f"{variant}.onnx", model.calibration))
    notes = [str(w.message) for w in caught if issubclass(w.category, BuildNote)]
    meta = {"build_s": time.perf_counter() - start, "notes": notes}
    meta_path.write_text(json.dumps({"file": path.name, **meta}, indent=1))
    return path, {**meta, "cached": False}


def _probe_all(model: Prepared, paths: dict[str, Path], rows: dict[str, dict[str, Any]],
               threads: int, progress: Progress) -> dict[str, dict[str, Any]]:
    outputs = {}
    for variant, row in rows.items():
        with progress.step(model.name, f"probe {variant}") as said:
            if variant not in paths:
                said["text"] = "skipped (no file)"
                continue
            try:
                result, outputs[variant] = probe(paths[variant], model.compare_inputs, threads)
                row.update(result)
                said["text"] = f"peak {result['peak_mb']:.0f} MB, load {result['load_s']:.2f}s"
            except Exception as error:  # noqa: BLE001
                del paths[variant]
                row.update(status="error", error=f"run: {_line(error)}")
                said["text"] = f"FAILED: {_line(error)}"
    return outputs


def _time_all(model: Prepared, paths: dict[str, Path], rows: dict[str, dict[str, Any]],
              options: SuiteOptions, progress: Progress) -> None:
    plans = (("latency_b1", 1, Timing(options.seconds * 0.35, 5, 500, 3, options.repeats)),
             ("throughput_b8", 8, Timing(options.seconds * 0.65, 3, 200, 1, options.repeats)))
    for key, batch, timing in plans:
        with progress.step(model.name, f"time batch {batch}") as said:
            if not paths:
                said["text"] = "nothing to time"
                continue
            try:
                timed = time_variants(paths, model.compare_inputs, batch=batch,
                                      threads=options.threads, timing=timing)
            except Exception as error:  # noqa: BLE001
                for variant in paths:
                    rows[variant].update(status="error", error=f"timing: {_line(error)}")
                said["text"] = f"FAILED: {_line(error)}"
                continue
            for variant, values in timed.items():
                rows[variant][key] = values
            said["text"] = f"{next(iter(timed.values()))['repeats']} rounds x {len(timed)} variants"


def _quality(model: Prepared, paths: dict[str, Path], rows: dict[str, dict[str, Any]],
             outputs: dict[str, dict[str, Any]]) -> str:
    """Fill each row's ``vs_fp32``, ``metric`` and ``quality`` (what the table and the plot
    show: the model's own metric, else top-1 agreement with fp32 for image classifiers and
    cosine for text encoders); return the step's summary line."""
    reference = outputs.get("fp32")
    classifier = model.info.get("kind") == "image"
    said = []
    for variant, path in paths.items():
        row = rows[variant]
        if reference is not None and variant in outputs:
            try:
                row["vs_fp32"] = agreement(reference, outputs[variant], classifier=classifier)
            except RuntimeError as error:
                row["notes"].append(f"no comparison with fp32: {error}")
        if model.eval_data:
            try:
                row["metric"] = dataset_metric(path, model.eval_data)
            except Exception as error:  # noqa: BLE001 - a missing data set is a note, not a stop
                row["notes"].append(f"no {model.eval_data} metric: {_line(error)}")
        if "metric" in row:
            row["quality"] = {"name": row["metric"]["metric"], "value": row["metric"]["value"]}
        elif "vs_fp32" in row:
            name = "top1_agreement" if classifier else "cosine"
            row["quality"] = {"name": f"{name} vs fp32", "value": row["vs_fp32"][name]}
        if "quality" in row:
            said.append(f"{variant} {row['quality']['value']:.4f}")
    return ", ".join(said)


def _ratios(rows: dict[str, dict[str, Any]]) -> None:
    """Variant / fp32 for latency (b1 median), throughput (b8), size and peak memory."""
    base = rows.get("fp32", {})
    picks = {"latency": ("latency_b1", "median_ms"), "throughput": ("throughput_b8",
             "samples_per_s"), "size": ("size_mb", None), "peak": ("peak_mb", None)}
    for row in rows.values():
        row["ratios"] = {}
        for name, (key, inner) in picks.items():
            mine, theirs = row.get(key), base.get(key)
            if inner and mine and theirs:
                mine, theirs = mine[inner], theirs[inner]
            if isinstance(mine, float) and isinstance(theirs, float) and theirs > 0:
                row["ratios"][name] = mine / theirs


def _config(options: SuiteOptions) -> dict[str, Any]:
    versions = {}
    for package in ("onnxruntime", "onnx", "numpy", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "suite": "baseline", "models": options.models, "variants": options.variants,
        "threads": options.threads, "session": SESSION.format(threads=options.threads),
        "timing": {"seconds_per_model": options.seconds, "fixed_repeats": options.repeats,
                   "batch1": "35% of the budget, 3 warm-up runs, 5-500 rounds",
                   "batch8": "65% of the budget, 1 warm-up run, 3-200 rounds"},
        "size_unit": "MB = 2**20 bytes", "python": sys.version.split()[0],
        "platform": platform.platform(), "cpus": os.cpu_count(), "versions": versions,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def _line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
