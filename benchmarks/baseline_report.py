"""The benchmark suites' outputs: the JSON file, the printed table and the latency/quality plot.

The baseline suite's table shows absolute numbers and variant / fp32 ratios; the quant
suite's (``config.suite == "quant"``) leads with what quantization is for: speed-up over fp32
at batch 1 and batch 8 (fp32 time / variant time; > 1 is faster), size as % of fp32, quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HEADER = ("model", "variant", "b1 ms [p10-p90]", "b8 /s", "MB", "peak MB", "load s",
          "quality", "vs fp32 top1/cos", "x lat", "x thr", "x MB", "x peak", "rounds b1/b8")
QUANT_HEADER = ("model", "variant", "speed-up b1", "speed-up b8", "size %", "quality",
                "vs fp32 top1/cos", "b1 ms", "b8 /s", "MB", "build s", "rounds b1/b8")
MARKERS = "osD^v<>phX*"


def write_json(results: dict[str, Any], path: Path) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


def table_rows(results: dict[str, Any], *, quant: bool = False) -> list[tuple[str, ...]]:
    """One tuple of cells per row: the baseline suite's, or the quant suite's with ``quant``;
    a failed row has a single cell after model and variant, the reason."""
    cells = _quant_cells if quant else _baseline_cells
    return [(r["model"], r["variant"],
             *(cells(r) if r["status"] == "ok" else (_failure(r["error"]),)))
            for r in results["rows"]]


def _baseline_cells(r: dict[str, Any]) -> tuple[str, ...]:
    b1, b8, ratios = r.get("latency_b1"), r.get("throughput_b8"), r.get("ratios", {})
    return (
        f"{b1['median_ms']:.3g} [{b1['p10_ms']:.3g}-{b1['p90_ms']:.3g}]" if b1 else "-",
        f"{b8['samples_per_s']:.1f}" if b8 else "-",
        f"{r['size_mb']:.2f}", f"{r['peak_mb']:.0f}", f"{r['load_s']:.2f}",
        _quality(r),
        _agreement(r.get("vs_fp32")),
        *(f"{ratios[k]:.2f}" if k in ratios else "-"
          for k in ("latency", "throughput", "size", "peak")),
        _rounds(b1, b8),
    )


def _quant_cells(r: dict[str, Any]) -> tuple[str, ...]:
    b1, b8, ratios = r.get("latency_b1"), r.get("throughput_b8"), r.get("ratios", {})
    built = "-" if "build_s" not in r else (
        f"{r['build_s']:.1f}" + (" (cached)" if r.get("cached") else ""))
    return (
        f"{1 / ratios['latency']:.2f}" if ratios.get("latency") else "-",
        f"{ratios['throughput']:.2f}" if "throughput" in ratios else "-",
        f"{100 * ratios['size']:.0f}" if "size" in ratios else "-",
        _quality(r), _agreement(r.get("vs_fp32")),
        f"{b1['median_ms']:.3g}" if b1 else "-",
        f"{b8['samples_per_s']:.1f}" if b8 else "-",
        f"{r['size_mb']:.2f}", built, _rounds(b1, b8),
    )


def _rounds(b1: dict[str, Any] | None, b8: dict[str, Any] | None) -> str:
    return f"{b1['repeats'] if b1 else '-'}/{b8['repeats'] if b8 else '-'}"


def _failure(error: str) -> str:
    """A failed cell: a skipped peer (not installed) says so; anything else is an error."""
    marker = "PeerUnavailable: "
    return f"skipped: {error.split(marker, 1)[1]}" if marker in error else f"ERROR {error}"


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
    quant = results["config"].get("suite") == "quant"
    header = QUANT_HEADER if quant else HEADER
    rows = table_rows(results, quant=quant)
    full = [row for row in rows if len(row) == len(header)]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *full)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
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
    ratios = ("speed-up = fp32 time / variant time (b1: median latency, b8: throughput); "
              "size % of fp32" if quant else "x = variant / fp32")
    print(f"\n{config['session']}; {ratios}; MB = 2**20 bytes; "
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
    per_row = min(len(variants), 3 * columns)  # about three entries fit under a subplot
    legend_rows = math.ceil(len(variants) / per_row)
    figure.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=8)
    suite, threads = results["config"].get("suite", "baseline"), results["config"]["threads"]
    figure.suptitle(f"{suite}: latency (batch 1, {threads} threads, ORT_ENABLE_ALL) "
                    "vs quality", fontsize=10)
    figure.tight_layout(rect=(0, 0.05 * legend_rows / lines ** 0.5, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"wrote {path}"
