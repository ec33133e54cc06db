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
import collections
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
MODELS = ("vit_s16", "resnet50", "bert")
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


# --------------------------------------------------------------------------- export


def _model_spec(name: str) -> dict[str, Any]:
    """Builder, example inputs and export names of one reference model (imports torch)."""
    from onnxpress.models import bert, resnet, vit

    if name == "vit_s16":
        return dict(
            module=vit.vit_s16(),
            inputs=vit.example_inputs(batch=2),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        )
    if name in ("resnet50", "resnet18"):
        return dict(
            module=getattr(resnet, name)(),
            inputs=resnet.example_inputs(batch=1),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes=None,
        )
    if name in ("bert", "bert_base", "bert_small"):
        module = bert.bert_small() if name == "bert_small" else bert.bert_base(seq_len=128)
        cfg = module.config
        batch = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}
        return dict(
            module=module,
            inputs=bert.example_inputs(batch=2, seq_len=cfg.seq_len, vocab_size=cfg.vocab_size),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes={
                **batch,
                "last_hidden_state": {0: "batch"},
                "pooler_output": {0: "batch"},
            },
        )
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}, resnet18, bert_small")


def export_model(name: str, exporter: str, path: Path) -> None:
    """Export one reference model (in a subprocess, so torch never loads into the driver)."""
    from onnxpress.models.export import export_onnx

    spec = _model_spec(name)
    export_onnx(
        spec["module"],
        spec["inputs"],
        path,
        input_names=spec["input_names"],
        output_names=spec["output_names"],
        dynamic_axes=spec["dynamic_axes"],
        exporter=exporter,
        opset=DEFAULT_OPSET[exporter],
    )


# --------------------------------------------------------------------------- tool worker


def _run_tool(tool: str, src: str, dst: str) -> None:
    """Load ``src``, optimise it with ``tool``, save to ``dst``. Runs in the worker process."""
    if tool == "onnxpress":
        import onnxpress

        m = onnxpress.load(src)
        m = onnxpress.compile(m, passes="cleanup")
        onnxpress.save(m, dst)
    elif tool == "onnxslim":
        import onnx
        import onnxslim

        m = onnxslim.slim(src)
        onnx.save(m, dst)
    elif tool == "onnxscript":
        import onnx
        import onnxscript.optimizer

        m = onnxscript.optimizer.optimize(onnx.load(src))
        onnx.save(m, dst)
    elif tool == "onnxsim":
        import onnx
        import onnxsim

        m, ok = onnxsim.simplify(onnx.load(src))
        if not ok:
            raise RuntimeError("onnxsim.simplify reported that its own check failed")
        onnx.save(m, dst)
    else:
        raise ValueError(f"unknown tool {tool!r}")


def _tool_imports(tool: str) -> None:
    """Import what ``tool`` needs, so that import time is measured apart from the work."""
    import onnx  # noqa: F401

    if tool == "onnxpress":
        import onnxpress

        onnxpress.load, onnxpress.compile, onnxpress.save  # noqa: B018  (resolve lazy names)
    elif tool == "onnxslim":
        import onnxslim  # noqa: F401
    elif tool == "onnxscript":
        import onnxscript.optimizer  # noqa: F401
    elif tool == "onnxsim":
        import onnxsim  # noqa: F401


def _peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    ``VmHWM`` from /proc (per address space, so it starts afresh at exec); ``ru_maxrss`` is
    the fallback, but on Linux it survives exec and would include the forking driver's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(tool: str, src: str, dst: str, result_path: str) -> int:
    """Subprocess entry: time imports, then load+optimise+save; write a JSON result."""
    res: dict[str, Any] = {"tool": tool}
    t0 = time.perf_counter()
    try:
        _tool_imports(tool)
        res["import_s"] = time.perf_counter() - t0
        res["rss_after_import_mb"] = _peak_rss_mb()
        t1 = time.perf_counter()
        _run_tool(tool, src, dst)
        res["wall_s"] = time.perf_counter() - t1
        res["status"] = "ok"
    except ModuleNotFoundError as e:
        res["status"] = "not installed" if tool != "onnxpress" and e.name and tool in e.name else "error"
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc().splitlines()[-15:]
    except BaseException as e:  # noqa: BLE001  (report anything, incl. SystemExit from a tool)
        res["status"] = "error"
        res["error"] = f"{type(e).__name__}: {e}"[:2000]
        res["traceback"] = traceback.format_exc().splitlines()[-15:]
    res["peak_rss_mb"] = _peak_rss_mb()
    Path(result_path).write_text(json.dumps(res))
    return 0 if res["status"] == "ok" else 1


# --------------------------------------------------------------------------- driver helpers


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _dir_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _count_nodes(graph: Any) -> int:
    """Nodes of a GraphProto, subgraph bodies included."""
    n = 0
    for node in graph.node:
        n += 1
        for attr in node.attribute:
            if attr.HasField("g"):
                n += _count_nodes(attr.g)
            for g in attr.graphs:
                n += _count_nodes(g)
    return n


def graph_stats(path: Path) -> dict[str, Any]:
    """Node count, op histogram, initializer/function counts and opset of an ONNX file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    hist = collections.Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type) for n in m.graph.node
    )
    return {
        "nodes": _count_nodes(m.graph),
        "nodes_no_const": _count_nodes(m.graph) - hist.get("Constant", 0),
        "ops": dict(sorted(hist.items())),
        "initializers": len(m.graph.initializer),
        "functions": len(m.functions),
        "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
    }


def hist_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """{op: [count before, count after]} for the op types whose count changed."""
    return {
        op: [before.get(op, 0), after.get(op, 0)]
        for op in sorted(set(before) | set(after))
        if before.get(op, 0) != after.get(op, 0)
    }


def make_inputs(path: Path, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Fixed-seed random inputs for an ONNX model's graph inputs (symbolic dims -> ``batch``).

    float: standard normal; ``*input_ids*``: ints in [1, vocab) (vocab from the model name's
    config, 30522 for BERT); ``*mask*``: ones with padding zeros at the end of later rows;
    other ints: zeros.
    """
    import numpy as np
    import onnx
    from onnx import helper

    rng = np.random.default_rng(seed)
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds: dict[str, Any] = {}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif "input_ids" in inp.name:
            feeds[inp.name] = rng.integers(1, 30522, size=shape).astype(dtype)
        elif "mask" in inp.name:
            mask = np.ones(shape, dtype=dtype)
            if len(shape) == 2:
                for i in range(1, shape[0]):
                    mask[i, shape[1] - (shape[1] // 4) * (1 + (i - 1) % 3) :] = 0
            feeds[inp.name] = mask
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def run_ort(path: Path, feeds: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run a model with ONNX Runtime CPU, graph optimisations off; {output name: array}."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, outs))


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Max |diff| over outputs (matched by name, else by position) and relative to max |ref|."""
    import numpy as np

    if list(ref) != list(got) and len(ref) == len(got) and not set(ref) <= set(got):
        got = dict(zip(ref, got.values()))
    worst, scale, per = 0.0, 0.0, {}
    for name, r in ref.items():
        if name not in got:
            return {"error": f"output {name!r} missing"}
        g = got[name]
        if g.shape != r.shape:
            return {"error": f"output {name!r} shape {g.shape} != {r.shape}"}
        d = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if r.size else 0.0
        if not np.all(np.isfinite(g) == np.isfinite(r)):
            d = float("inf")
        per[name] = d
        worst = max(worst, d)
        scale = max(scale, float(np.max(np.abs(r[np.isfinite(r)]))) if r.size else 0.0)
    return {"max_abs_diff": worst, "max_rel_diff": worst / scale if scale else worst, "per_output": per}


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# --------------------------------------------------------------------------- driver


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
            "versions": _versions(tools),
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
                    results["runs"].append({"model": model, "exporter": exporter, "status": "export failed",
                                            "error": "\n".join(tail)})
                    continue
                tmp.replace(src)
                print(f"[export] {key} done in {time.perf_counter() - t:.1f}s", flush=True)
            before = graph_stats(src)
            feeds = make_inputs(src, batch=args.batch)
            ref = run_ort(src, feeds, args.ort_threads)
            print(f"[model] {key}: {before['nodes']} nodes, {src.stat().st_size / 2**20:.1f} MB", flush=True)

            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
            hashes: dict[str, set[str]] = {t: set() for t in tools}
            for rep in range(args.repeats):
                for tool in tools:
                    if runs[tool] and runs[tool][-1]["status"] in ("not installed", "error", "timeout"):
                        continue  # a failing tool fails the same way again
                    out_dir = work / f"{model}_{exporter}" / tool
                    shutil.rmtree(out_dir, ignore_errors=True)
                    out_dir.mkdir(parents=True)
                    res_path = out_dir.parent / f"{tool}.result.json"
                    res_path.unlink(missing_ok=True)
                    t = time.perf_counter()
                    try:
                        proc = subprocess.run(
                            [sys.executable, __file__, "--_worker", tool, str(src),
                             str(out_dir / "model.onnx"), str(res_path)],
                            env=env, capture_output=True, text=True, timeout=args.timeout,
                        )
                        if res_path.exists():
                            res = json.loads(res_path.read_text())
                        else:
                            res = {"status": "error", "error": f"worker exited {proc.returncode}",
                                   "traceback": (proc.stderr or "").strip().splitlines()[-15:]}
                    except subprocess.TimeoutExpired:
                        res = {"status": "timeout", "error": f"no result within {args.timeout}s"}
                    res["process_s"] = time.perf_counter() - t
                    res["repeat"] = rep
                    if res["status"] == "ok":
                        hashes[tool].add(_dir_hash(out_dir))
                    runs[tool].append(res)
                    msg = f"{res['wall_s']:.2f}s" if res["status"] == "ok" else f"{res['status']}: {res.get('error', '')[:200]}"
                    print(f"  [{key}] repeat {rep + 1}/{args.repeats} {tool:<10} {msg}", flush=True)

            for tool in tools:
                rs = runs[tool]
                row: dict[str, Any] = {
                    "model": model, "exporter": exporter, "tool": tool, "input": str(src),
                    "nodes_before": before["nodes"], "size_before_mb": src.stat().st_size / 2**20,
                    "repeats": rs,
                }
                ok = [r for r in rs if r["status"] == "ok"]
                if not ok or len(ok) != len(rs):
                    bad = next(r for r in rs if r["status"] != "ok")
                    row.update(status=bad["status"], error=bad.get("error"), traceback=bad.get("traceback"))
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
                        size_after_mb=_dir_size(out_dir) / 2**20,
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
            _write(results, args.out)
    results["gaps"] = find_gaps(results)
    _write(results, args.out)
    return results


def _versions(tools: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnx", "onnxruntime", "onnx-ir", "torch", *tools):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _write(results: dict[str, Any], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def _numeric_ok(row: dict[str, Any], tol: float) -> bool:
    num = row.get("numeric", {})
    return row.get("status") == "ok" and "error" not in num and num.get("max_rel_diff", 1.0) <= tol


def find_gaps(results: dict[str, Any], tol: float = 1e-3) -> dict[str, Any]:
    """Per model: op types the best (fewest nodes, numerically correct) peer has fewer of than onnxpress."""
    gaps: dict[str, Any] = {}
    rows = [r for r in results["runs"] if "tool" in r]
    for key in sorted({(r["model"], r["exporter"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["exporter"]) == key]
        ours = next((r for r in mine if r["tool"] == "onnxpress"), None)
        peers = [r for r in mine if r["tool"] != "onnxpress" and _numeric_ok(r, tol)]
        if not peers:
            continue
        best = min(peers, key=lambda r: r["nodes_after"])
        entry: dict[str, Any] = {"best_peer": best["tool"], "best_peer_nodes": best["nodes_after"]}
        if ours is None or ours.get("status") != "ok":
            entry["onnxpress"] = ours.get("status") if ours else "not run"
            entry["best_peer_op_diff"] = best["op_diff"]
        else:
            entry["onnxpress_nodes"] = ours["nodes_after"]
            entry["peer_has_fewer"] = {
                op: {"onnxpress": n, best["tool"]: best["ops_after"].get(op, 0)}
                for op, n in ours["ops_after"].items()
                if best["ops_after"].get(op, 0) < n
            }
            # op by op, the fewest any correct peer leaves, where that is fewer than ours
            entry["any_peer_has_fewer"] = {}
            for op, n in ours["ops_after"].items():
                low = min(peers, key=lambda r: r["ops_after"].get(op, 0))
                if low["ops_after"].get(op, 0) < n:
                    entry["any_peer_has_fewer"][op] = {"onnxpress": n, low["tool"]: low["ops_after"].get(op, 0)}
            entry["peer_has_more"] = {
                op: {"onnxpress": ours["ops_after"].get(op, 0), best["tool"]: n}
                for op, n in best["ops_after"].items()
                if ours["ops_after"].get(op, 0) < n
            }
        gaps["/".join(key)] = entry
    return gaps


def print_table(results: dict[str, Any]) -> None:
    header = ("model", "exporter", "tool", "nodes", "non-Constant", "wall s (med)", "import s", "peak RSS MB",
              "size MB", "max|diff|", "rel", "det", "status")
    rows = []
    for r in results["runs"]:
        if "tool" not in r:
            rows.append((r["model"], r["exporter"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", r["status"]))
            continue
        if r["status"] != "ok":
            rows.append((r["model"], r["exporter"], r["tool"], f"{r['nodes_before']}->?", "-", "-", "-", "-",
                         "-", "-", "-", "-", f"{r['status']}: {(r.get('error') or '')[:70]}"))
            continue
        num = r.get("numeric", {})
        diff = f"{num['max_abs_diff']:.2e}" if "max_abs_diff" in num else "ERR"
        rel = f"{num['max_rel_diff']:.1e}" if "max_rel_diff" in num else "-"
        status = "ok" if "error" not in num else f"ort: {num['error'][:60]}"
        rows.append((
            r["model"], r["exporter"], r["tool"], f"{r['nodes_before']}->{r['nodes_after']}",
            "{}->{}".format(*r["nodes_no_const"]),
            _fmt_s(r["wall_s_median"]), _fmt_s(r["import_s_median"]), f"{r['peak_rss_mb']:.0f}",
            f"{r['size_before_mb']:.1f}->{r['size_after_mb']:.1f}", diff, rel,
            "yes" if r["deterministic"] else "NO", status,
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))

    print("\nOp-type changes (before -> after) per tool:")
    for r in results["runs"]:
        if r.get("status") == "ok":
            diff = ", ".join(f"{op} {a}->{b}" for op, (a, b) in r["op_diff"].items())
            print(f"  {r['model']}/{r['exporter']} {r['tool']}: {diff or '(none)'}")
    gaps = results.get("gaps", {})
    if gaps:
        print("\nWhat the best peer removes/fuses that onnxpress keeps (op: onnxpress vs peer count):")
        for key, g in gaps.items():
            if "peer_has_fewer" in g:
                fewer = ", ".join(f"{op} {v['onnxpress']} vs {v[g['best_peer']]}" for op, v in g["peer_has_fewer"].items())
                more = ", ".join(f"{op} {v['onnxpress']} vs {v[g['best_peer']]}" for op, v in g["peer_has_more"].items())
                anyp = ", ".join(
                    f"{op} {v['onnxpress']} vs " + " ".join(f"{k} {c}" for k, c in v.items() if k != "onnxpress")
                    for op, v in g["any_peer_has_fewer"].items()
                )
                print(f"  {key}: best peer {g['best_peer']} ({g['best_peer_nodes']} nodes) vs onnxpress "
                      f"({g['onnxpress_nodes']} nodes)\n    best peer has fewer: {fewer or '(none)'}"
                      f"\n    best peer has more (ops it fused into): {more or '(none)'}"
                      f"\n    op by op, some peer has fewer: {anyp or '(none)'}")
            else:
                print(f"  {key}: onnxpress {g['onnxpress']}; best peer {g['best_peer']} "
                      f"({g['best_peer_nodes']} nodes) changes: "
                      + ", ".join(f"{op} {a}->{b}" for op, (a, b) in g["best_peer_op_diff"].items()))
    failures = [r for r in results["runs"] if r.get("tool") and r.get("status") not in ("ok", "not installed")]
    seen: set[str] = set()
    for r in failures:
        print(f"\n{r['model']}/{r['exporter']} {r['tool']} {r['status']}: {(r.get('error') or '')[:500]}")
        tb = "\n".join("    " + ln for ln in (r.get("traceback") or [])[-6:])
        print(tb if tb not in seen else "    (same traceback as above)")
        seen.add(tb)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        return worker(*argv[1:5])
    if argv[:1] == ["--_export"]:
        export_model(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--exporters", default="dynamo", help="dynamo, torchscript, or both comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "cleanup.json"))
    p.add_argument("--cache-dir", default=str(HERE / "results" / "models"), help="exported input models")
    p.add_argument("--work-dir", default=str(HERE / "results" / "cleanup_outputs"), help="tool outputs")
    p.add_argument("--keep-outputs", action="store_true", help="keep each tool's last output model")
    p.add_argument("--reexport", action="store_true", help="export again even if cached")
    p.add_argument("--batch", type=int, default=2, help="batch size for dynamic axes in the numeric check")
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
