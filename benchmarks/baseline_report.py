"""The baseline suite's outputs: the JSON file, the printed table and the latency/quality plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HEADER = ("model", "variant", "b1 ms [p10-p90]", "b8 /s", "MB", "peak MB", "load s",
          "quality", "vs fp32 top1/cos", "x lat", "x thr", "x MB", "x peak", "rounds b1/b8")
MARKERS = "osD^v<>phX*"


def write_json(results: dict[str, Any], path: Path) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for r in results["rows"]:
        if r["status"] != "ok":
            rows.append((r["model"], r["variant"], f"ERROR {r['error']}"))
            continue
        b1, b8, ratios = r.get("latency_b1"), r.get("throughput_b8"), r.get("ratios", {})
        rows.append((
            r["model"], r["variant"],
            f"{b1['median_ms']:.3g} [{b1['p10_ms']:.3g}-{b1['p90_ms']:.3g}]" if b1 else "-",
            f"{b8['samples_per_s']:.1f}" if b8 else "-",
            f"{r['size_mb']:.2f}", f"{r['peak_mb']:.0f}", f"{r['load_s']:.2f}",
            _quality(r),
            _agreement(r.get("vs_fp32")),
            *(f"{ratios[k]:.2f}" if k in ratios else "-"
              for k in ("latency", "throughput", "size", "peak")),
            f"{b1['repeats'] if b1 else '-'}/{b8['repeats'] if b8 else '-'}",
        ))
    return rows


def _agreement(vs_fp32: dict[str, Any] | None) -> str:
    if vs_fp32 is None:
        return "-"
    top1 = vs_fp32["top1_agreement"]
    return f"{'-' if top1 is None else f'{top1:.3f}'}/{vs_fp32['cosine']:.4f}"


def _quality(row: dict[str, Any]) -> str:
    quality = row.get("quality")
    if quality is None:
        return "-"
    short = {"top1_accuracy": "acc", "top1_agreement vs fp32": "top1 agree",
             "cosine vs fp32": "cos", "retrieval_agreement": "retrieval"}
    text = f"{short.get(quality['name'], quality['name'])} {quality['value']:.4f}"
    spearman = (row.get("metric") or {}).get("metrics", {}).get("spearman")
    return text if spearman is None else f"{text} rho {spearman:.4f}"


def print_table(results: dict[str, Any]) -> None:
    rows = table_rows(results)
    full = [row for row in rows if len(row) == len(HEADER)]
    widths = [max(len(str(x)) for x in column) for column in zip(HEADER, *full)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths))
    print(line)
    print("-" * len(line))
    model = None
    for row in rows:
        if model is not None and row[0] != model:
            print()
        model = row[0]
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    notes: dict[tuple[str, str], list[str]] = {}  # (model, note) -> variants
    for r in results["rows"]:
        for note in r.get("notes", []):
            notes.setdefault((r["model"], note), []).append(r["variant"])
    for (model, note), variants in notes.items():
        print(f"note: {model} ({', '.join(variants)}): {note}")
    config = results["config"]
    print(f"\n{config['session']}; x = variant / fp32; MB = 2**20 bytes; "
          f"wall {config.get('wall_s', 0):.0f}s")


def plot(results: dict[str, Any], path: Path) -> str:
    """Latency at batch 1 against quality, one subplot per model, a marker per variant;
    returns what was done (a message when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    models: dict[str, list[dict[str, Any]]] = {}
    for r in results["rows"]:
        if r["status"] == "ok" and r.get("latency_b1") and r.get("quality"):
            models.setdefault(r["model"], []).append(r)
    if not models:
        return "nothing to plot"
    variants = list(dict.fromkeys(r["variant"] for rs in models.values() for r in rs))
    columns = min(4, len(models))
    lines = math.ceil(len(models) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.3 * lines),
                                squeeze=False)
    for ax, (model, rows) in zip(axes.flat, models.items()):
        for r in rows:
            index, b1 = variants.index(r["variant"]), r["latency_b1"]
            spread = [[b1["median_ms"] - b1["p10_ms"]], [b1["p90_ms"] - b1["median_ms"]]]
            ax.errorbar(b1["median_ms"], r["quality"]["value"], xerr=spread, capsize=2,
                        marker=MARKERS[index % len(MARKERS)], color=f"C{index}", alpha=0.8)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("latency b1, median ms [p10-p90]", fontsize=8)
        ax.set_ylabel(rows[0]["quality"]["name"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)],
                          color=f"C{i}", label=v) for i, v in enumerate(variants)]
    figure.legend(handles=handles, loc="lower center", ncol=len(variants), fontsize=8)
    threads = results["config"]["threads"]
    figure.suptitle(f"baseline: latency (batch 1, {threads} threads, ORT_ENABLE_ALL) "
                    "vs quality", fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"wrote {path}"
