"""The ``tome`` suite's tables and plot."""

from __future__ import annotations

from pathlib import Path

from ..core import compression
from ..core.plot import NoPlot, pyplot, save
from ..core.suite import Row, ok
from ..core.tables import table

PROTOTYPE = "PyTorch ToMe r={r}, exported (naive prototype)"
FUSED = "fuse-for-ort"  # the unmerged model with ONNX Runtime's fused ops: a second baseline


def _macs(r: Row, rows: list[Row]) -> str:
    """The variant's MACs at batch 1; the unmerged count where tome did not run."""
    s = r["stats"]
    if "macs_kept" in s:
        return f"{_giga(s['macs_after_M'])} ({s['macs_kept']:.0%})"
    full = [o["stats"]["macs_before_M"] for o in ok(rows) if "macs_before_M" in o["stats"]]
    return f"{_giga(full[0])} (100%)" if full else "-"


def _giga(millions: float) -> str:
    return f"{millions / 1e3:.2f} G" if millions >= 100 else f"{millions:.2f} M"


def _versus(mine: Row, other: Row | None) -> str:
    if other is None or "b1_ms" not in other:
        return "-"
    return f"{other['b1_ms'] / mine['b1_ms']:.2f}x / {other['b8_ms'] / mine['b8_ms']:.2f}x"


def speed_table(rows: list[Row]) -> str:
    """Speed-ups against the exported model (``cleanup``); against the unmerged model with
    the same fusion where the variant fuses too; against the naive prototype where the
    variant merges as many tokens."""
    fused = next((r for r in ok(rows) if r["variant"] == FUSED), None)
    naive = next((r for r in ok(rows) if r["variant"].startswith("PyTorch ToMe")), None)
    same = naive["variant"].split("r=")[1].split(",")[0] if naive else None

    def cells(r: Row) -> tuple[str, ...]:
        s, spec = r["stats"], r["variant"]
        tokens = (f"{s['tokens_in'][0]} .. {s['tokens_in'][-1]} -> {s['tokens_out']}"
                  if "tokens_in" in s else "-")
        like = "int8" not in spec and spec.startswith((f"tome(r={same})", f"tome(r={same},mode"))
        return (tokens, _macs(r, rows), *compression.timing_cells(r),
                _versus(r, fused) if FUSED in spec else "-", _versus(r, naive) if like else "-")

    header = ("model", "variant", "tokens per block", "MACs b1", *compression.TIMING_HEADER,
              "cosine vs baseline", "b1 / b8 vs fuse-for-ort", "b1 / b8 vs prototype")
    return table(header, rows, cells)


def accuracy_table(rows: list[Row]) -> str:
    base: dict[str, tuple[float, float | None]] = {}

    def cells(r: Row) -> tuple[str, ...]:
        m, s = r["metrics"], r["stats"]
        first = base.setdefault(r["model"], (m["value"], m["shifted"]))
        shifted = "-" if m["shifted"] is None else (
            f"{m['shifted']:.2%} ({100 * (m['shifted'] - first[1]):+.2f} pt)")
        return (" ".join(map(str, s["tokens_in"])) if "tokens_in" in s else "-",
                f"{s['macs_kept']:.0%}" if "macs_kept" in s else "100%",
                f"{m['value']:.2%} ({100 * (m['value'] - first[0]):+.2f} pt)", shifted)

    header = ("model", "variant", "tokens per block", "MACs kept", "top-1 (change)",
              "shifted (change)")
    return table(header, rows, cells)


def tables(rows: list[Row]) -> dict[str, str]:
    return {"speed": speed_table([r for r in rows if r["part"] == "speed"]),
            "accuracy, training-free": accuracy_table([r for r in rows
                                                      if r["part"] == "accuracy"])}


def plot(rows: list[Row], path: Path) -> str:
    """Top-1 against r, merge and prune, on both digits splits; MACs kept on a second axis."""
    sweep = [r for r in ok(rows) if r.get("mode") in ("merge", "prune")]
    try:
        plt = pyplot()
        if not sweep:
            raise NoPlot("nothing to plot")
    except NoPlot as why:
        return str(why)
    figure, axis = plt.subplots(figsize=(6.5, 4))
    macs = axis.twinx()
    for index, mode in enumerate(("merge", "prune")):
        points = sorted(((r["r"], r) for r in sweep if r["mode"] == mode or r["r"] == 0),
                        key=lambda p: p[0])
        rs = [x for x, _ in points]
        for split, style, label in (("value", "-", "test"), ("shifted", ":", "shifted")):
            values = [p["metrics"][split] for _, p in points]
            if None not in values:
                axis.plot(rs, [100 * v for v in values], style, marker="o", color=f"C{index}",
                          label=f"{mode}, {label}")
        macs.plot(rs, [100 * p["stats"].get("macs_kept", 1.0) for _, p in points], "--",
                  color=f"C{index}", alpha=0.35)
    axis.set_xlabel("r (tokens merged or dropped per block)")
    axis.set_ylabel("top-1 %")
    macs.set_ylabel("multiply-accumulates kept % (dashed)")
    axis.set_title(f"{sweep[0]['model']}: tome, training-free", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    return save(figure, path, dpi=120)
