"""``lowrank`` (truncated-SVD factorisation) benchmark, one-shot (no fine-tuning), in two parts.

    python benchmarks/lowrank.py [--rounds 40] [--speed-models deit_small,minilm]
        [--accuracy-models digits_vit,digits_cnn,minilm] [--cache-dir benchmarks/results/lowrank]
        [--out benchmarks/results/lowrank.json]

**Speed**: ViT-S/16 (``deit_small``, random weights, exported once by ``baseline_export`` in a
child process and cached in ``--cache-dir``/MODEL, so torch never loads here) as ``cleanup``
(the baseline) against ``cleanup,lowrank(ratio=0.5,...,aware=false)`` in the MLPs only (the
issue's case) and in every linear layer, timed on the suite's seeded comparison images; the
real all-MiniLM-L6-v2 as ``cleanup`` against ``lowrank(params=0.75)`` (activation-aware on the
calibration texts below), timed on sentences 200-207 of ``minilm_texts.json`` padded to 128
tokens. Per variant: layers factored / eligible layers, the eligible linear weights before
and after, parameters, file size, median ms at batch 1 (``--rounds`` rounds) and batch 8
(half as many), ``bench_models`` (ONNX Runtime CPU, 2 threads, no spinning, models
interleaved), speed-up = baseline median / variant median, and the first output's cosine
against the baseline on the first 8 timing inputs (a sanity number only for deit_small,
whose weights are random).

**Accuracy** (trained digits ViT and CNN, real MiniLM): each model at two budgets, a
``params`` fraction of the eligible weights kept overall and a per-layer rank ``ratio``,
each plain (``aware=false``: SVD of the weights) and activation-aware (``aware=true``: SVD
after whitening by the calibration inputs' second moments), so that the two meet at the
same parameter count. Both get the calibration data, so a ``params`` budget is spread by
measured sensitivity in both and the whitening is the only difference. The digits CNN's
layers are under the default ``min_elements``, so there it is 0. Then **compensation**:
int4 weight-only alone, and with EoRA-style branches of two ranks
(``lowrank(compensate=...,rank=R)``), with the share of int4's gap to the dense model
they win back. Calibration: ``digits_calibration.npz`` one image a batch (the pass reads
up to 256); MiniLM the sentences of ``minilm_calibration.json`` (written apart from the
evaluation set), each its own unpadded batch. Metrics: digits top-1 accuracy on the test
split, on ``digits-shifted`` (the split under the training augmentation's nine 1-pixel
shifts: 4050 images, so that one image is 0.025 points rather than 0.22) and the logits'
relative L2 error ||factored - dense|| / ||dense|| on the test split; MiniLM
``minilm-texts`` metrics against fp32 embeddings (spearman of pair similarities, mean
cosine, retrieval agreement). ``kept`` is weights_after / weights_before of the eligible
layers; ``s`` the pass's wall time (calibration run included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import compression_bench as common
import numpy as np
from baseline_export import prepare

SPEED = {"deit_small": ("lowrank(ratio=0.5,layers=mlp,aware=false)",
                        "lowrank(ratio=0.5,aware=false)"),
         "minilm": ("lowrank(params=0.75)",)}
#: per model, the budgets measured plain and aware (``params``: a fraction of the eligible
#: weights overall; ``ratio``: of each layer's rank, which keeps a square layer dense at 0.5,
#: so the ``kept`` column says what it comes to)
ACCURACY = {"digits_vit": ("params=0.7", "ratio=0.5"),
            "digits_cnn": ("params=0.7,min_elements=0", "ratio=0.5,min_elements=0"),
            "minilm": ("params=0.75", "ratio=0.375")}
#: per model, a weight pipeline whose error EoRA-style branches of each rank make up
COMPENSATE = {"digits_vit": ("weight-only(bits=4,block_size=32,min_elements=0)", (8, 16)),
              "minilm": ("weight-only(bits=4,block_size=128)", (16, 32))}


def build(source: Any, spec: str, path: Path, calibration: Any = None) -> dict[str, Any]:
    """``common.build`` plus ``kept``: the eligible linear weights' fraction left."""
    row = common.build(source, spec, path, calibration)
    stats = row["stats"]
    return dict(row, kept=stats["weights_after"] / stats["weights_before"] if stats else None)


def factored(r: dict[str, Any]) -> str:
    s = r["stats"]
    return f"{s['layers_factored']}/{s['layers']}" if s else "-"


def speed(name: str, cache: Path, rounds: int) -> list[dict[str, Any]]:
    if name == "minilm":
        from onnxpress.models.minilm import tokenize

        source, calibration = common.subject(name)
        # quant_headline's timing inputs
        feeds = tokenize(common.minilm_texts()[200:208], pad_to=128)
        (cache / name).mkdir(parents=True, exist_ok=True)
    else:
        prepared = prepare(name, cache / name)
        source, calibration, feeds = prepared.fp32, None, dict(np.load(prepared.compare_inputs))
    rows = [build(source, spec, cache / name / f"v{i}.onnx", calibration if spec else None)
            for i, spec in enumerate(("", *SPEED[name]))]
    return common.timed(name, rows, feeds, rounds)


def speed_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | variant | layers factored | linear weights (M) | params (M) | file MB "
             "| b1 ms | b1 speed-up | b8 ms | b8 speed-up | cosine vs dense |", "|---" * 11 + "|"]
    for r in rows:
        s = r["stats"]
        weights = (f"{s['weights_before'] / 1e6:.2f} -> {s['weights_after'] / 1e6:.2f}"
                   if s else "-")
        lines.append(f"| {r['model']} | {r['spec']} | {factored(r)} | {weights} | "
                     f"{r['parameters'] / 1e6:.2f} | {common.timing_cells(r)} |")
    return "\n".join(lines)


def accuracy(name: str, cache: Path) -> list[dict[str, Any]]:
    source, calibration = common.subject(name, cache / name)
    variants = [("", None)] + [(budget, aware) for budget in ACCURACY[name]
                               for aware in (False, True)]
    rows = []
    for i, (budget, aware) in enumerate(variants):
        spec = f"lowrank({budget},aware={str(aware).lower()})" if budget else ""
        rows.append(dict(build(source, spec, cache / name / f"a{i}.onnx",
                               calibration),
                         budget=budget or "dense", aware=aware))
    pipeline, ranks = COMPENSATE.get(name, ("", ()))
    specs = [pipeline] * bool(ranks) + [f"lowrank(compensate='{pipeline}',rank={r})"
                                        for r in ranks]
    rows += [dict(common.build(source, spec, cache / name / f"c{i}.onnx", calibration),
                  budget=None, kept=None) for i, spec in enumerate(specs)]
    return common.scored(name, rows)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    """One line per (model, budget): plain | aware in adjacent columns."""
    lines = ["| model | budget | kept plain / aware | factored plain / aware | s plain / aware "
             "| accuracy / spearman: plain | aware | shifted / mean cos: plain | aware "
             "| logits rel-L2 / retrieval: plain | aware |", "|---" * 12 + "|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["budget"] is not None:
            groups.setdefault((r["model"], r["budget"]), []).append(r)
    base: dict[str, float] = {}

    def cells(r: dict[str, Any]) -> list[str]:
        m, minilm = r["metrics"], r["model"] == "minilm"
        main = m["spearman"] if minilm else m["value"]
        delta = main - base.setdefault(r["model"], main)
        first = f"{main:.4f} ({delta:+.4f})" if minilm else f"{main:.4f} ({100 * delta:+.2f} pt)"
        rest = ((m["mean_cosine"], m["retrieval_agreement"]) if minilm
                else (m["shifted"], m["logits_rel_l2"]))
        return [first, *(f"{v:.4f}" for v in rest)]

    for (model, budget), pair in groups.items():
        kept = " / ".join("-" if r["kept"] is None else f"{r['kept']:.3f}" for r in pair)
        columns = list(zip(*(cells(r) for r in pair)))  # metric by metric: plain, aware
        lines.append(f"| {model} | {budget} | {kept} | "
                     f"{' / '.join(factored(r) for r in pair)} | "
                     f"{' / '.join(format(r['seconds'], '.2f') for r in pair)} | "
                     + " | ".join(" | ".join(c) if len(c) == 2 else f"{c[0]} | -"
                                  for c in columns) + " |")
    return "\n".join(lines)


def compensation_table(rows: list[dict[str, Any]]) -> str:
    """The weight pipeline alone, then with branches: the metrics, and the share of the
    pipeline's loss against the dense model that the branches win back (MiniLM: Spearman;
    digits: the logits' error, since 450 images cannot resolve int4's accuracy change)."""
    lines = ["| model | variant | branch weights | accuracy / spearman | shifted / mean cos "
             "| logits rel-L2 / retrieval | loss recovered |", "|---" * 7 + "|"]
    dense: dict[str, float] = {}
    alone: dict[str, float] = {}
    for r in rows:
        m, minilm = r["metrics"], r["model"] == "minilm"
        loss = 1 - m["spearman"] if minilm else m["logits_rel_l2"]
        if r["budget"] == "dense":
            dense[r["model"]] = loss
        if r["budget"] is not None:
            continue
        cells = ([m["spearman"], m["mean_cosine"], m["retrieval_agreement"]] if minilm
                 else [m["value"], m["shifted"], m["logits_rel_l2"]])
        won = "-"
        if "compensate" in r["spec"]:
            gap = alone[r["model"]] - dense[r["model"]]
            won = f"{(alone[r['model']] - loss) / gap:.0%}" if gap > 0 else "-"
        else:
            alone[r["model"]] = loss
        weights = r["stats"].get("branch_weights", "-")
        lines.append(f"| {r['model']} | {r['spec']} | {weights} | "
                     + " | ".join(f"{v:.4f}" for v in cells) + f" | {won} |")
    return "\n".join(lines)


def tables(fast: list[dict[str, Any]], good: list[dict[str, Any]]) -> str:
    return (f"{speed_table(fast)}\n\n{accuracy_table(good)}\n\n"
            f"{compensation_table(good)}")


def main(argv: list[str] | None = None) -> int:
    return common.main(argv, __doc__, "lowrank", speed, accuracy, tables, ",".join(SPEED),
                       ",".join(ACCURACY))


if __name__ == "__main__":
    raise SystemExit(main())
