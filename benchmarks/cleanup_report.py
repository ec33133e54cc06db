"""The cleanup benchmark's JSON, its table, and the gaps between onnxpress and the best peer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cleanup_measure import fmt_s

HERE = Path(__file__).resolve().parent
TOOLS = ("onnxpress", "onnxslim", "onnxscript", "onnxsim")
MODELS = ("vit_s16", "resnet50", "bert")
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}  # the dynamo exporter's lowest opset is 18


# --------------------------------------------------------------------------- export


def tool_versions(tools: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnx", "onnxruntime", "onnx-ir", "torch", *tools):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_json(results: dict[str, Any], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def _numeric_ok(row: dict[str, Any], tol: float) -> bool:
    num = row.get("numeric", {})
    return row.get("status") == "ok" and "error" not in num and num.get("max_rel_diff", 1.0) <= tol


def find_gaps(results: dict[str, Any], tol: float = 1e-3) -> dict[str, Any]:
    """Per model: op types of which the best peer (fewest nodes, numerically correct) has
    fewer than onnxpress."""
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
                    entry["any_peer_has_fewer"][op] = {
                        "onnxpress": n,
                        low["tool"]: low["ops_after"].get(op, 0),
                    }
            entry["peer_has_more"] = {
                op: {"onnxpress": ours["ops_after"].get(op, 0), best["tool"]: n}
                for op, n in best["ops_after"].items()
                if ours["ops_after"].get(op, 0) < n
            }
        gaps["/".join(key)] = entry
    return gaps


def print_table(results: dict[str, Any]) -> None:
    header = (
        "model",
        "exporter",
        "tool",
        "nodes",
        "non-Constant",
        "wall s (med)",
        "import s",
        "peak RSS MB",
        "size MB",
        "max|diff|",
        "rel",
        "det",
        "status",
    )
    rows = []
    for r in results["runs"]:
        if "tool" not in r:
            rows.append((r["model"], r["exporter"], *["-"] * 10, r["status"]))
            continue
        if r["status"] != "ok":
            error = f"{r['status']}: {(r.get('error') or '')[:70]}"
            nodes = f"{r['nodes_before']}->?"
            rows.append((r["model"], r["exporter"], r["tool"], nodes, *["-"] * 8, error))
            continue
        num = r.get("numeric", {})
        diff = f"{num['max_abs_diff']:.2e}" if "max_abs_diff" in num else "ERR"
        rel = f"{num['max_rel_diff']:.1e}" if "max_rel_diff" in num else "-"
        status = "ok" if "error" not in num else f"ort: {num['error'][:60]}"
        rows.append(
            (
                r["model"],
                r["exporter"],
                r["tool"],
                f"{r['nodes_before']}->{r['nodes_after']}",
                "{}->{}".format(*r["nodes_no_const"]),
                fmt_s(r["wall_s_median"]),
                fmt_s(r["import_s_median"]),
                f"{r['peak_rss_mb']:.0f}",
                f"{r['size_before_mb']:.1f}->{r['size_after_mb']:.1f}",
                diff,
                rel,
                "yes" if r["deterministic"] else "NO",
                status,
            )
        )
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
        print(
            "\nWhat the best peer removes/fuses that onnxpress keeps (op: onnxpress vs peer count):"
        )
        for key, g in gaps.items():
            if "peer_has_fewer" in g:
                fewer = ", ".join(
                    f"{op} {v['onnxpress']} vs {v[g['best_peer']]}"
                    for op, v in g["peer_has_fewer"].items()
                )
                more = ", ".join(
                    f"{op} {v['onnxpress']} vs {v[g['best_peer']]}"
                    for op, v in g["peer_has_more"].items()
                )
                anyp = ", ".join(
                    f"{op} {v['onnxpress']} vs "
                    + " ".join(f"{k} {c}" for k, c in v.items() if k != "onnxpress")
                    for op, v in g["any_peer_has_fewer"].items()
                )
                print(
                    f"  {key}: best peer {g['best_peer']} ({g['best_peer_nodes']} nodes) "
                    "vs onnxpress "
                    f"({g['onnxpress_nodes']} nodes)\n    best peer has fewer: {fewer or '(none)'}"
                    f"\n    best peer has more (ops it fused into): {more or '(none)'}"
                    f"\n    op by op, some peer has fewer: {anyp or '(none)'}"
                )
            else:
                print(
                    f"  {key}: onnxpress {g['onnxpress']}; best peer {g['best_peer']} "
                    f"({g['best_peer_nodes']} nodes) changes: "
                    + ", ".join(f"{op} {a}->{b}" for op, (a, b) in g["best_peer_op_diff"].items())
                )
    failures = [
        r
        for r in results["runs"]
        if r.get("tool") and r.get("status") not in ("ok", "not installed")
    ]
    seen: set[str] = set()
    for r in failures:
        print(
            f"\n{r['model']}/{r['exporter']} {r['tool']} {r['status']}: "
            f"{(r.get('error') or '')[:500]}"
        )
        tb = "\n".join("    " + ln for ln in (r.get("traceback") or [])[-6:])
        print(tb if tb not in seen else "    (same traceback as above)")
        seen.add(tb)
