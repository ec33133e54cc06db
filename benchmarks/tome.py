"""``tome`` (token merging) benchmark, training-free, in two parts.

    python benchmarks/tome.py [--rounds 60] [--speed-models deit_small]
        [--accuracy-models digits_vit] [--cache-dir benchmarks/results/tome]
        [--out benchmarks/results/tome.json]

**Speed**: ViT-S/16 @ 224 (``deit_small``, random weights, exported once by
``baseline_export`` in a child process and cached in ``--cache-dir``/MODEL) as ``cleanup``
(the unmerged baseline) and ``fuse-for-ort`` (unmerged, with ORT's fused Attention and
BiasGelu) against ``tome(r=13)`` (ToMe's off-the-shelf ViT-S setting) without and with
``fuse-for-ort``, ``schedule=decreasing`` (fused) and ``mode=prune``, then the ``int8``
preset alone and after ``tome(r=13)`` (calibrated on the suite's 64 seeded images), timed on the
suite's comparison images. Per variant: multiply-accumulates at batch 1 (the pass's own
count) and their share of the baseline's, file size, median ms at batch 1 (``--rounds``
rounds) and batch 8 (a third as many), ``bench_models`` (ONNX Runtime CPU, 2 threads, no
spinning, all variants interleaved), speed-up = baseline median / variant median, and the
first output's cosine against the baseline on 8 inputs (a sanity number only: the weights
are random, so it says nothing about accuracy).

**Accuracy**: the trained digits ViT (8x8 digits, 64 one-pixel patches + CLS = 65 tokens,
6 blocks) at r = 0, 2, ..., 16 merged (ToMe) and dropped (``mode=prune``: the tokens the
CLS token attends to least), each with its multiply-accumulates kept; top-1 on the test
split and on ``digits-shifted`` (the split under the nine 1-pixel training shifts, 4050
images, so one image is 0.025 points); then ``tome`` followed by the ``int8`` preset
(calibrated on ``digits_calibration.npz``). The curve of accuracy against r, both modes,
is plotted to ``--out`` with ``.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import compression_bench as common
import numpy as np
from baseline_export import prepare
from tome_prototype import prototype

from onnxpress.backends.ort_runner import Runner

SPEED = ("", "fuse-for-ort", "tome(r=13)", "tome(r=13),fuse-for-ort",
         "tome(r=13,schedule=decreasing),fuse-for-ort", "tome(r=13,mode=prune)", "int8",
         "tome(r=13),int8")
FUSED = "fuse-for-ort"  # the unmerged model with ONNX Runtime's fused ops: a second baseline
PROTOTYPE_R = 13
PROTOTYPE = f"PyTorch ToMe r={PROTOTYPE_R}, exported (naive prototype)"
R_SWEEP = tuple(range(0, 17, 2))
COMPOSED = ("tome(r=10)", "int8", "tome(r=10),int8")


def _build(source: Any, spec: str, path: Path, calibration: Any) -> dict[str, Any]:
    """``common.build`` keeping the tome pass's stats (tokens, MACs) wherever it ran."""
    return common.build(source, spec, path, calibration if "int8" in spec else None,
                        stats_of="tome")


def speed(name: str, cache: Path, rounds: int) -> list[dict[str, Any]]:
    prepared = prepare(name, cache / name)
    feeds = dict(np.load(prepared.compare_inputs))
    calibration = prepared.calibration.batches
    rows = [_build(prepared.fp32, spec, cache / name / f"v{i}.onnx", calibration)
            for i, spec in enumerate(SPEED)]
    rows.append(_prototype_row(name, cache / name, rows, feeds))
    return common.timed(name, rows, feeds, rounds, b8_rounds=max(rounds // 3, 5))


def _prototype_row(name: str, folder: Path, rows: list[dict[str, Any]],
                   feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """The naive prototype (:mod:`tome_prototype`) as a row; its logits' largest difference
    from the pass's ``tome(r=13)`` on the comparison inputs is in its notes, since both
    compute the same merges on the same weights."""
    path = prototype(name, folder, PROTOTYPE_R)
    ours = next(r for r in rows if r["spec"] == f"tome(r={PROTOTYPE_R})")
    sample = {k: v[:8] for k, v in feeds.items()}
    outputs = [next(iter(Runner(p).run(sample).values())) for p in (path, ours["path"])]
    gap = float(np.abs(outputs[0] - outputs[1]).max())
    return {"spec": PROTOTYPE, "path": str(path), "parameters": ours["parameters"],
            "bytes": path.stat().st_size,
            "stats": dict(ours["stats"], max_abs_diff_vs_tome=gap),
            "seconds": 0.0, "notes": [f"largest logit difference from {ours['spec']}: {gap:.2e}"]}


def _macs(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The variant's MACs at batch 1; the unmerged count where tome did not run."""
    s = r["stats"]
    if "macs_kept" in s:
        return f"{s['macs_after_M'] / 1e3:.2f} G ({s['macs_kept']:.0%})"
    full = [o["stats"]["macs_before_M"] for o in rows if "macs_before_M" in o["stats"]]
    return f"{full[0] / 1e3:.2f} G (100%)" if full else "-"


def speed_table(rows: list[dict[str, Any]]) -> str:
    """Speed-ups against the exported model (``cleanup``); against the unmerged model with
    the same fusion (``fuse-for-ort``) where the variant fuses too; and against the naive
    prototype where the variant merges as many tokens."""
    lines = ["| model | variant | tokens per block | MACs b1 | file MB | b1 ms | b1 speed-up "
             "| b8 ms | b8 speed-up | cosine vs baseline | b1 / b8 vs fuse-for-ort "
             "| b1 / b8 vs prototype |", "|---" * 12 + "|"]
    fused = next((r for r in rows if r["spec"] == FUSED), None)
    naive = next((r for r in rows if r["spec"] == PROTOTYPE), None)
    for r in rows:
        s = r["stats"]
        tokens = (f"{s['tokens_in'][0]} .. {s['tokens_in'][-1]} -> {s['tokens_out']}"
                  if "tokens_in" in s else "-")
        versus = _versus(r, fused) if FUSED in r["spec"] else "-"
        same_tokens = ("int8" not in r["spec"] and r["spec"].startswith(
            (f"tome(r={PROTOTYPE_R})", f"tome(r={PROTOTYPE_R},mode")))
        against = _versus(r, naive) if same_tokens else "-"
        lines.append(f"| {r['model']} | {r['spec']} | {tokens} | {_macs(r, rows)} | "
                     f"{common.timing_cells(r)} | {versus} | {against} |")
    return "\n".join(lines)


def _versus(row: dict[str, Any], other: dict[str, Any] | None) -> str:
    if other is None:
        return "-"
    return f"{other['b1_ms'] / row['b1_ms']:.2f}x / {other['b8_ms'] / row['b8_ms']:.2f}x"


def accuracy(name: str, cache: Path) -> list[dict[str, Any]]:
    source, calibration = common.subject(name, cache / name)
    specs = [("", "merge", 0)] + [(f"tome(r={r},mode={mode})", mode, r)
                                  for mode in ("merge", "prune") for r in R_SWEEP[1:]]
    rows = [dict(_build(source, spec, cache / name / f"a{i}.onnx", calibration),
                 mode=mode, r=r) for i, (spec, mode, r) in enumerate(specs)]
    rows += [dict(_build(source, spec, cache / name / f"c{i}.onnx", calibration),
                  mode="composed", r=None) for i, spec in enumerate(COMPOSED)]
    return common.scored(name, rows)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | variant | tokens per block | MACs kept | top-1 (change) "
             "| shifted (change) |", "|---" * 6 + "|"]
    base: dict[str, tuple[float, float]] = {}
    for r in rows:
        m, s = r["metrics"], r["stats"]
        first = base.setdefault(r["model"], (m["value"], m["shifted"]))
        tokens = " ".join(map(str, s["tokens_in"])) if "tokens_in" in s else "-"
        kept = f"{s['macs_kept']:.0%}" if "macs_kept" in s else "100%"
        lines.append(f"| {r['model']} | {r['spec']} | {tokens} | {kept} | "
                     f"{m['value']:.2%} ({100 * (m['value'] - first[0]):+.2f} pt) | "
                     f"{m['shifted']:.2%} ({100 * (m['shifted'] - first[1]):+.2f} pt) |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Top-1 against r, merge and prune, on both digits splits; MACs kept on a second
    axis. What was written, or why nothing was."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    sweep = [r for r in rows if r["mode"] in ("merge", "prune")]
    if not sweep:
        return "nothing to plot"
    figure, axis = plt.subplots(figsize=(6.5, 4))
    macs = axis.twinx()
    for index, mode in enumerate(("merge", "prune")):
        points = sorted((r["r"], r) for r in sweep if r["mode"] == mode or r["r"] == 0)
        rs = [x for x, _ in points]
        for split, style, label in (("value", "-", "test"), ("shifted", ":", "shifted")):
            axis.plot(rs, [100 * p["metrics"][split] for _, p in points], style, marker="o",
                      color=f"C{index}", label=f"{mode}, {label}")
        macs.plot(rs, [100 * p["stats"].get("macs_kept", 1.0) for _, p in points], "--",
                  color=f"C{index}", alpha=0.35)
    axis.set_xlabel("r (tokens merged or dropped per block)")
    axis.set_ylabel("top-1 %")
    macs.set_ylabel("multiply-accumulates kept % (dashed)")
    axis.set_title(f"{sweep[0]['model']}: tome, training-free", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return f"plot: {path}"


def tables(fast: list[dict[str, Any]], good: list[dict[str, Any]]) -> str:
    return f"{speed_table(fast)}\n\n{accuracy_table(good)}"


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, __doc__, "tome", speed, accuracy, tables, "deit_small",
                       "digits_vit", rounds=60, after=plot)


if __name__ == "__main__":
    raise SystemExit(main())
