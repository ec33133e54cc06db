"""Tables and the plot of the variant-matrix suites (``baseline``, ``quant``).

The baseline table shows absolute numbers and variant / fp32 ratios (``x``); the quant
table leads with what quantization is for: speed-up over fp32 at batch 1 and batch 8 (fp32
time / variant time; > 1 is faster), size as % of fp32, quality.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .plot import NoPlot, pyplot, save
from .tables import num, table

Row = dict[str, Any]
MARKERS = "osD^v<>phX*"
BASELINE_HEADER = ("model", "variant", "b1 ms [p10-p90]", "b8 /s", "MB", "peak MB", "load s",
                   "quality", "vs fp32 top1/cos", "x lat", "x thr", "x MB", "x peak",
                   "rounds b1/b8")
QUANT_HEADER = ("model", "variant", "speed-up b1", "speed-up b8", "size %", "quality",
                "vs fp32 top1/cos", "b1 ms", "b8 /s", "MB", "build s", "rounds b1/b8")


def baseline_tables(rows: list[Row]) -> dict[str, str]:
    return {"variants against fp32 (x = variant / fp32)":
            table(BASELINE_HEADER, rows, _baseline_cells), **_notes(rows)}


def quant_tables(rows: list[Row]) -> dict[str, str]:
    return {"int8 against fp32 (speed-up = fp32 time / variant time; size % of fp32)":
            table(QUANT_HEADER, rows, _quant_cells), **_notes(rows)}


def _baseline_cells(r: Row) -> tuple[str, ...]:
    b1, b8, ratios = r.get("latency_b1"), r.get("throughput_b8"), r.get("ratios", {})
    return (
        f"{b1['median_ms']:.3g} [{b1['p10_ms']:.3g}-{b1['p90_ms']:.3g}]" if b1 else "-",
        num(b8 and b8["samples_per_s"], ".1f"), f"{r['size_mb']:.2f}",
        num(r.get("peak_mb"), ".0f"), num(r.get("load_s")), _quality(r),
        _agreement(r.get("vs_fp32")),
        *(num(ratios.get(k)) for k in ("latency", "throughput", "size", "peak")),
        _rounds(b1, b8),
    )


def _quant_cells(r: Row) -> tuple[str, ...]:
    b1, b8, ratios = r.get("latency_b1"), r.get("throughput_b8"), r.get("ratios", {})
    built = num(r.get("build_s"), ".1f") + (" (cached)" if r.get("cached") else "")
    return (
        num(1 / ratios["latency"] if ratios.get("latency") else None),
        num(ratios.get("throughput")),
        num(100 * ratios["size"] if "size" in ratios else None, ".0f"),
        _quality(r), _agreement(r.get("vs_fp32")),
        num(b1 and b1["median_ms"], ".3g"), num(b8 and b8["samples_per_s"], ".1f"),
        f"{r['size_mb']:.2f}", built, _rounds(b1, b8),
    )


def _rounds(b1: dict[str, Any] | None, b8: dict[str, Any] | None) -> str:
    return f"{b1['repeats'] if b1 else '-'}/{b8['repeats'] if b8 else '-'}"


def _agreement(vs_fp32: dict[str, Any] | None) -> str:
    if vs_fp32 is None:
        return "-"
    return f"{num(vs_fp32['top1_agreement'], '.3f')}/{vs_fp32['cosine']:.4f}"


def _quality(r: Row) -> str:
    quality = r.get("quality")
    if quality is None:
        return "-"
    short = {"top1_accuracy": "acc", "top1_agreement vs fp32": "top1 agree",
             "cosine vs fp32": "cos", "retrieval_agreement": "retrieval"}
    text = f"{short.get(quality['name'], quality['name'])} {quality['value']:.4f}"
    spearman = (r.get("metric") or {}).get("metrics", {}).get("spearman")
    return text if spearman is None else f"{text} rho {spearman:.4f}"


def _notes(rows: list[Row]) -> dict[str, str]:
    """The builders' notes (a fallback they took), once per model and note."""
    notes: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        for note in r.get("notes", []):
            notes.setdefault((r["model"], note), []).append(r["variant"])
    if not notes:
        return {}
    return {"notes": "\n".join(f"- {model} ({', '.join(variants)}): {note}"
                               for (model, note), variants in notes.items())}


def plot(rows: list[Row], path: Path) -> str:
    """Latency at batch 1 against quality, a subplot per model, a marker per variant."""
    try:
        plt = pyplot()
    except NoPlot as why:
        return str(why)
    models: dict[str, list[Row]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("latency_b1") and r.get("quality"):
            models.setdefault(r["model"], []).append(r)
    if not models:
        return "nothing to plot"
    variants = list(dict.fromkeys(r["variant"] for rs in models.values() for r in rs))
    columns = min(4, len(models))
    lines = math.ceil(len(models) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.3 * lines),
                                squeeze=False)
    for ax, (model, mine) in zip(axes.flat, models.items()):
        for r in mine:
            index, b1 = variants.index(r["variant"]), r["latency_b1"]
            spread = [[b1["median_ms"] - b1["p10_ms"]], [b1["p90_ms"] - b1["median_ms"]]]
            ax.errorbar(b1["median_ms"], r["quality"]["value"], xerr=spread, capsize=2,
                        marker=MARKERS[index % len(MARKERS)], color=f"C{index}", alpha=0.8)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("latency b1, median ms [p10-p90]", fontsize=8)
        ax.set_ylabel(mine[0]["quality"]["name"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)],
                          color=f"C{i}", label=v) for i, v in enumerate(variants)]
    per_row = min(len(variants), 3 * columns)  # about three entries fit under a subplot
    figure.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=8)
    figure.suptitle(f"{path.stem}: latency (batch 1, ORT_ENABLE_ALL) vs quality", fontsize=10)
    legend_rows = math.ceil(len(variants) / per_row)
    figure.tight_layout(rect=(0, 0.05 * legend_rows / lines ** 0.5, 1, 0.96))
    return save(figure, path)
