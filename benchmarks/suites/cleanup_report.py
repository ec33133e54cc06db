"""The ``cleanup`` suite's tables: per tool and model, its op-type changes, and the gaps
between onnxpress and the best peer."""

from __future__ import annotations

from typing import Any

from ..core.suite import Row, ok
from ..core.tables import markdown, num, table

TOLERANCE = 1e-3  # relative: a peer's output counts as correct within it


def _correct(r: Row) -> bool:
    return r["status"] == "ok" and r.get("numeric", {}).get("max_rel_diff", 1.0) <= TOLERANCE


def find_gaps(rows: list[Row]) -> dict[str, Any]:
    """Per model/exporter: the best peer (fewest nodes, numerically correct), and op types
    of which it (or, op by op, any correct peer) has fewer than onnxpress."""
    gaps: dict[str, Any] = {}
    for key in dict.fromkeys((r["model"], r["exporter"]) for r in ok(rows) if "nodes_after" in r):
        mine = [r for r in ok(rows) if (r["model"], r["exporter"]) == key and "nodes_after" in r]
        ours = next((r for r in mine if r["variant"] == "onnxpress"), None)
        peers = [r for r in mine if r["variant"] != "onnxpress" and _correct(r)]
        if not peers or ours is None:
            continue
        best = min(peers, key=lambda r: r["nodes_after"])
        ops = ours["ops_after"]
        any_fewer = {}
        for op, n in ops.items():
            low = min(peers, key=lambda r: r["ops_after"].get(op, 0))
            if low["ops_after"].get(op, 0) < n:
                any_fewer[op] = {"onnxpress": n, low["variant"]: low["ops_after"].get(op, 0)}
        gaps["/".join(key)] = {
            "best_peer": best["variant"], "best_peer_nodes": best["nodes_after"],
            "onnxpress_nodes": ours["nodes_after"],
            "peer_has_fewer": {op: {"onnxpress": n, best["variant"]: best["ops_after"].get(op, 0)}
                               for op, n in ops.items() if best["ops_after"].get(op, 0) < n},
            "peer_has_more": {op: {"onnxpress": ops.get(op, 0), best["variant"]: n}
                              for op, n in best["ops_after"].items() if ops.get(op, 0) < n},
            "any_peer_has_fewer": any_fewer}
    return gaps


def _cells(r: Row) -> tuple[str, ...]:
    num_ = r.get("numeric", {})
    return (f"{r['nodes_before']}->{r['nodes_after']}", "{}->{}".format(*r["nodes_no_const"]),
            num(r["wall_s_median"]), num(r["import_s_median"]), f"{r['peak_rss_mb']:.0f}",
            f"{r['size_before_mb']:.1f}->{r['size_after_mb']:.1f}",
            num(num_.get("max_abs_diff"), ".2e"), num(num_.get("max_rel_diff"), ".1e"),
            "yes" if r["deterministic"] else "NO")


def _pairs(found: dict[str, dict[str, int]], best: str) -> str:
    return ", ".join(f"{op} {v['onnxpress']} vs {v[best]}" for op, v in found.items()) or "(none)"


def tables(rows: list[Row]) -> dict[str, str]:
    header = ("model", "exporter", "tool", "nodes", "non-Constant", "wall s (med)", "import s",
              "peak RSS MB", "size MB", "max abs diff", "rel", "det")
    changes = [[r["model"], r["exporter"], r["variant"],
                ", ".join(f"{op} {a}->{b}" for op, (a, b) in r["op_diff"].items()) or "(none)"]
               for r in ok(rows) if "op_diff" in r]
    gaps = []
    for key, g in find_gaps(rows).items():
        anyone = ", ".join(f"{op} {v['onnxpress']} vs " + " ".join(
            f"{k} {c}" for k, c in v.items() if k != "onnxpress")
            for op, v in g["any_peer_has_fewer"].items()) or "(none)"
        gaps.append([key, f"{g['best_peer']} ({g['best_peer_nodes']})", g["onnxpress_nodes"],
                     _pairs(g["peer_has_fewer"], g["best_peer"]),
                     _pairs(g["peer_has_more"], g["best_peer"]), anyone])
    return {
        "tools (medians of the repeats)": table(header, rows, _cells,
                                                names=("model", "exporter", "variant")),
        "op-type changes (before -> after)": markdown(("model", "exporter", "tool", "changes"),
                                                      changes),
        "what the best peer removes that onnxpress keeps (op: onnxpress vs peer)": markdown(
            ("model/exporter", "best peer (nodes)", "onnxpress nodes", "best peer has fewer",
             "best peer has more (ops it fused into)", "op by op, some peer has fewer"), gaps),
    }
