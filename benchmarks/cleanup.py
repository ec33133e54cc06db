"""Cleanup benchmark: onnxpress ``cleanup`` against onnxslim, onnxscript's optimizer and onnxsim.

Usage::

    python benchmarks/cleanup.py [--models vit_s16,resnet50,bert] [--repeats 3]
                                 [--exporters dynamo,torchscript] [--tools onnxpress,onnxslim,...]
                                 [--out benchmarks/results/cleanup.json]

Each reference model is exported once per exporter (cached under ``--cache-dir``). Then, for
every model, every tool runs on the same input file in a fresh subprocess, ``--repeats``
times interleaved (A, B, C, A, B, C, ...). Inside the subprocess the tool's imports are timed
separately (``import_s``) from load + optimize + save (``wall_s``, ``time.perf_counter``);
the subprocess reports its own peak RSS (``VmHWM``, imports included). For every output:
node count, the per-op-type histogram difference from the input, size on disk, whether
repeats gave the same bytes, and a numeric check with ONNX Runtime (CPU, graph
optimisations off, fixed-seed inputs) against the input model: max |diff| over all outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cleanup_measure import (
    compare,
    dir_hash,
    dir_size,
    graph_stats,
    hist_diff,
    make_inputs,
    run_ort,
)
from cleanup_report import find_gaps, print_table, tool_versions, write_json
from cleanup_worker import export_model, worker

HERE = Path(__file__).resolve().parent
TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
MODELS = ("vit_s16", "resnet50", "bert")
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


# --------------------------------------------------------------------------- export


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    exporters = [e.strip() for e in args.exporters.split(",") if e.strip()]
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    results: dict[str, Any] = {
        "config": {
            "models": models,
            "tools": tools,
            "exporters": exporters,
            "repeats": args.repeats,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": tool_versions(tools),
        },
        "runs": [],
    }
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    for exporter in exporters:
        for model in models:
            key = f"{model}/{exporter}"
            src = cache / f"{model}_{exporter}.onnx"
            if not src.exists() or args.reexport:
                print(f"[export] {key} -> {src}", flush=True)
                t = time.perf_counter()
                tmp = src.with_suffix(".tmp.onnx")
                proc = subprocess.run(
                    [sys.executable, __file__, "--_export", model, exporter, str(tmp)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0 or not tmp.exists():
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
                    print(f"[export] {key} FAILED:\n  " + "\n  ".join(tail), flush=True)
                    results["runs"].append(
                        {
                            "model": model,
                            "exporter": exporter,
                            "status": "export failed",
                            "error": "\n".join(tail),
                        }
                    )
                    continue
                tmp.replace(src)
                print(f"[export] {key} done in {time.perf_counter() - t:.1f}s", flush=True)
            before = graph_stats(src)
            feeds = make_inputs(src, batch=args.batch)
            ref = run_ort(src, feeds, args.ort_threads)
            print(
                f"[model] {key}: {before['nodes']} nodes, {src.stat().st_size / 2**20:.1f} MB",
                flush=True,
            )

            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
            hashes: dict[str, set[str]] = {t: set() for t in tools}
            for rep in range(args.repeats):
                for tool in tools:
                    if runs[tool] and runs[tool][-1]["status"] in (
                        "not installed",
                        "error",
                        "timeout",
                    ):
                        continue  # a failing tool fails the same way again
                    out_dir = work / f"{model}_{exporter}" / tool
                    shutil.rmtree(out_dir, ignore_errors=True)
                    out_dir.mkdir(parents=True)
                    res_path = out_dir.parent / f"{tool}.result.json"
                    res_path.unlink(missing_ok=True)
                    t = time.perf_counter()
                    try:
                        proc = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--_worker",
                                tool,
                                str(src),
                                str(out_dir / "model.onnx"),
                                str(res_path),
                            ],
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=args.timeout,
                        )
                        if res_path.exists():
                            res = json.loads(res_path.read_text())
                        else:
                            res = {
                                "status": "error",
                                "error": f"worker exited {proc.returncode}",
                                "traceback": (proc.stderr or "").strip().splitlines()[-15:],
                            }
                    except subprocess.TimeoutExpired:
                        res = {"status": "timeout", "error": f"no result within {args.timeout}s"}
                    res["process_s"] = time.perf_counter() - t
                    res["repeat"] = rep
                    if res["status"] == "ok":
                        hashes[tool].add(dir_hash(out_dir))
                    runs[tool].append(res)
                    msg = (
                        f"{res['wall_s']:.2f}s"
                        if res["status"] == "ok"
                        else f"{res['status']}: {res.get('error', '')[:200]}"
                    )
                    print(f"  [{key}] repeat {rep + 1}/{args.repeats} {tool:<10} {msg}", flush=True)

            for tool in tools:
                rs = runs[tool]
                row: dict[str, Any] = {
                    "model": model,
                    "exporter": exporter,
                    "tool": tool,
                    "input": str(src),
                    "nodes_before": before["nodes"],
                    "size_before_mb": src.stat().st_size / 2**20,
                    "repeats": rs,
                }
                ok = [r for r in rs if r["status"] == "ok"]
                if not ok or len(ok) != len(rs):
                    bad = next(r for r in rs if r["status"] != "ok")
                    row.update(
                        status=bad["status"], error=bad.get("error"), traceback=bad.get("traceback")
                    )
                else:
                    out_dir = work / f"{model}_{exporter}" / tool
                    out = out_dir / "model.onnx"
                    after = graph_stats(out)
                    row.update(
                        status="ok",
                        wall_s_median=statistics.median(r["wall_s"] for r in ok),
                        wall_s_all=[r["wall_s"] for r in ok],
                        import_s_median=statistics.median(r["import_s"] for r in ok),
                        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
                        rss_after_import_mb=max(r["rss_after_import_mb"] for r in ok),
                        nodes_after=after["nodes"],
                        nodes_no_const=[before["nodes_no_const"], after["nodes_no_const"]],
                        size_after_mb=dir_size(out_dir) / 2**20,
                        initializers=[before["initializers"], after["initializers"]],
                        opset_after=after["opset"],
                        op_diff=hist_diff(before["ops"], after["ops"]),
                        ops_after=after["ops"],
                        deterministic=len(hashes[tool]) == 1,
                    )
                    try:
                        row["numeric"] = compare(ref, run_ort(out, feeds, args.ort_threads))
                    except Exception as e:  # noqa: BLE001
                        row["numeric"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                    if not args.keep_outputs:
                        shutil.rmtree(out_dir, ignore_errors=True)
                results["runs"].append(row)
            results.setdefault("inputs", {})[key] = {"path": str(src), **before}
            write_json(results, args.out)
    results["gaps"] = find_gaps(results)
    write_json(results, args.out)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        return worker(*argv[1:5])
    if argv[:1] == ["--_export"]:
        export_model(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument(
        "--exporters", default="dynamo", help="dynamo, torchscript, or both comma-separated"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "cleanup.json"))
    p.add_argument(
        "--cache-dir", default=str(HERE / "results" / "models"), help="exported input models"
    )
    p.add_argument(
        "--work-dir", default=str(HERE / "results" / "cleanup_outputs"), help="tool outputs"
    )
    p.add_argument("--keep-outputs", action="store_true", help="keep each tool's last output model")
    p.add_argument("--reexport", action="store_true", help="export again even if cached")
    p.add_argument(
        "--batch", type=int, default=2, help="batch size for dynamic axes in the numeric check"
    )
    p.add_argument("--ort-threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run")
    args = p.parse_args(argv)
    results = run_benchmark(args)
    print()
    print_table(results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
