"""``cleanup``: onnxpress ``cleanup`` against onnxslim, onnxscript's optimizer and onnxsim.

ViT-S/16, ResNet-50 and a BERT-base-shaped encoder, exported once per exporter
(``--set exporters=dynamo,torchscript``; dynamo with ``optimize=False``, so the raw graph
reaches every tool) in a child process and cached. Then, per model, every tool runs on the
same input file in a fresh process, ``--repeats`` times interleaved (A, B, C, A, B, C, ...):
its imports are timed apart (``import_s``) from load + optimize + save (``wall_s``), and the
process reports its own peak RSS (imports included). For every output: node count (subgraphs
included), the op histogram's difference from the input, size on disk, whether repeats gave
the same bytes, and a numeric check with ONNX Runtime (CPU, graph optimisations off,
fixed-seed inputs) against the input: max |diff| over all outputs, also relative to the
largest |output|. A tool that is not installed is ``unavailable``; the gaps table lists the
op types the best numerically correct peer has fewer of than onnxpress.

    python -m benchmarks.run --suite cleanup [--models vit_s16,resnet50,bert] [--repeats 3]
        [--variants onnxpress,onnxslim] [--set exporters=dynamo,torchscript]

``--smoke``: the shipped digits CNN (a TorchScript export), one repeat.
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..core import subjects
from ..core.cache import version_tag
from ..core.child import run_child
from ..core.graphs import dir_hash, dir_size, graph_stats, hist_diff
from ..core.suite import Context, Row, Suite, Unavailable, log, row, step
from .cleanup_report import tables
from .cleanup_tools import PACKAGES, TOOLS, export_model, run_tool


def source(model: str, exporter: str, ctx: Context) -> Path:
    if model in subjects.DIGITS:
        return subjects.PACKAGE_MODELS / f"{model}.onnx"
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed: no export (pip install -e .[torch])")
    key = (model, f"cleanup-{exporter}", version_tag("torch"))
    return ctx.cache.file(key, lambda path: run_child(
        export_model, name=model, exporter=exporter, target=str(path))).path


def measure(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    tools = [t for t in TOOLS if ctx.wants(t)]
    for model in ctx.models:
        exporters = ("torchscript",) if model in subjects.DIGITS else ctx.options["exporters"]
        for exporter in exporters:
            failed = row(model, "export", exporter=exporter)
            with step(failed, "export"):
                rows += _model(ctx, model, exporter, source(model, exporter, ctx), tools)
            if failed["status"] != "ok":
                rows.append(failed)
    return rows


def _model(ctx: Context, model: str, exporter: str, src: Path, tools: list[str]) -> list[Row]:
    before = graph_stats(src)
    feeds = make_inputs(src, batch=2)
    reference = run_ort(src, feeds, ctx.threads)
    log(f"[model] {model}/{exporter}: {before['nodes']} nodes, {src.stat().st_size / 2**20:.1f} MB")
    rows = {t: row(model, t, exporter=exporter, input=str(src), nodes_before=before["nodes"],
                   size_before_mb=src.stat().st_size / 2**20, repeats=[]) for t in tools}
    hashes: dict[str, set[str]] = {t: set() for t in tools}
    work = ctx.folder(f"{model}_{exporter}")
    for tool, r in rows.items():
        package, distribution, install = PACKAGES[tool]
        if importlib.util.find_spec(package) is None:
            r.update(status="unavailable", reason=f"{distribution} is not installed ({install})")
    for repeat in range(ctx.repeats):
        for tool, r in rows.items():
            if r["status"] != "ok":
                continue  # a failing tool fails the same way again
            out = work / tool
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            with step(r, "run"):
                said = run_child(run_tool, timeout=ctx.options["timeout"], tool=tool, src=str(src),
                                 dst=str(out / "model.onnx"))
                r["repeats"].append(dict(said["value"], peak_rss_mb=said["peak_rss_mb"]))
                hashes[tool].add(dir_hash(out))
                log(f"  [{model}/{exporter}] repeat {repeat + 1}/{ctx.repeats} {tool:<10} "
                    f"{said['value']['wall_s']:.2f}s")
    for tool, r in rows.items():
        if r["status"] == "ok":
            _summarise(r, before, work / tool, len(hashes[tool]) == 1)
            with step(r, "numeric check"):
                r["numeric"] = compare(reference, run_ort(work / tool / "model.onnx", feeds,
                                                          ctx.threads))
    return list(rows.values())


def _summarise(r: Row, before: dict[str, Any], out: Path, deterministic: bool) -> None:
    after, runs = graph_stats(out / "model.onnx"), r["repeats"]
    r.update(wall_s_median=statistics.median(x["wall_s"] for x in runs),
             wall_s_all=[x["wall_s"] for x in runs],
             import_s_median=statistics.median(x["import_s"] for x in runs),
             peak_rss_mb=max(x["peak_rss_mb"] for x in runs),
             rss_after_import_mb=max(x["rss_after_import_mb"] for x in runs),
             nodes_after=after["nodes"],
             nodes_no_const=[before["nodes_no_const"], after["nodes_no_const"]],
             size_after_mb=dir_size(out) / 2**20,
             initializers=[before["initializers"], after["initializers"]],
             opset_after=after["opset"], op_diff=hist_diff(before["ops"], after["ops"]),
             ops_after=after["ops"], deterministic=deterministic)


def make_inputs(path: Path, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed inputs for a model's graph inputs (symbolic dims -> ``batch``). float:
    standard normal; ``*input_ids*``: ints in [1, 30522) (BERT's vocabulary); ``*mask*``:
    ones with padding zeros at the end of later rows; other ints: zeros."""
    import onnx
    from onnx import helper

    rng = np.random.default_rng(seed)
    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in (v for v in model.graph.input if v.name not in weights):
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif "input_ids" in value.name:
            feeds[value.name] = rng.integers(1, 30522, size=shape).astype(dtype)
        elif "mask" in value.name and len(shape) == 2:
            mask = np.ones(shape, dtype=dtype)
            for i in range(1, shape[0]):
                mask[i, shape[1] - (shape[1] // 4) * (1 + (i - 1) % 3) :] = 0
            feeds[value.name] = mask
        else:
            feeds[value.name] = np.zeros(shape, dtype=dtype)
    return feeds


def run_ort(path: Path, feeds: dict[str, np.ndarray], threads: int) -> dict[str, np.ndarray]:
    """Every output of ``path`` with ONNX Runtime CPU, graph optimisations off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    found = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip([o.name for o in session.get_outputs()], found))


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max |diff| over outputs (matched by name, else by position) and relative to max |ref|."""
    if list(ref) != list(got) and len(ref) == len(got) and not set(ref) <= set(got):
        got = dict(zip(ref, got.values()))
    worst, scale, per = 0.0, 0.0, {}
    for name, r in ref.items():
        if name not in got or got[name].shape != r.shape:
            raise RuntimeError(f"output {name!r} missing or of another shape")
        g = got[name]
        d = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if r.size else 0.0
        per[name] = d if np.all(np.isfinite(g) == np.isfinite(r)) else float("inf")
        worst = max(worst, per[name])
        scale = max(scale, float(np.max(np.abs(r[np.isfinite(r)]))) if r.size else 0.0)
    return {"max_abs_diff": worst, "max_rel_diff": worst / scale if scale else worst,
            "per_output": per}


SUITE = Suite("cleanup", __doc__, models=("vit_s16", "resnet50", "bert"),
              smoke_models=("digits_cnn",), more_models=("resnet18", "bert_small", "digits_vit"),
              measure=measure, tables=tables,
              variants=TOOLS, repeats=3,
              options={"exporters": ("dynamo",), "timeout": 1800.0})
