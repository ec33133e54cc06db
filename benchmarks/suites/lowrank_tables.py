"""The ``lowrank`` suite's three tables: speed; accuracy with plain and activation-aware
side by side per budget; compensation with the share of the loss won back."""

from __future__ import annotations

from ..core import compression
from ..core.suite import Row, ok
from ..core.tables import markdown, num, table


def factored(r: Row) -> str:
    s = r["stats"]
    return f"{s['layers_factored']}/{s['layers']}" if "layers_factored" in s else "-"


def speed_table(rows: list[Row]) -> str:
    def cells(r: Row) -> tuple[str, ...]:
        s = r["stats"]
        weights = (f"{s['weights_before'] / 1e6:.2f} -> {s['weights_after'] / 1e6:.2f}"
                   if "weights_after" in s else "-")
        return (factored(r), weights, f"{r['parameters'] / 1e6:.2f}",
                *compression.timing_cells(r))

    header = ("model", "variant", "layers factored", "linear weights (M)", "params (M)",
              *compression.TIMING_HEADER, "cosine vs dense")
    return table(header, rows, cells)


def _metric_cells(r: Row, base: dict[str, float]) -> list[str]:
    """Main metric (with its change against the dense model), then two more."""
    m, minilm = r["metrics"], r["model"] == "minilm"
    main = m["spearman"] if minilm else m["value"]
    delta = compression.change(main, base.setdefault(r["model"], main), r["model"])
    first = f"{main:.4f} ({delta})"
    rest = ((m["mean_cosine"], m["retrieval_agreement"]) if minilm
            else (m["shifted"], m["logits_rel_l2"]))
    return [first, *(num(v, ".4f") for v in rest)]


def accuracy_table(rows: list[Row]) -> str:
    """One line per (model, budget): plain | aware in adjacent columns."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in ok(rows):
        groups.setdefault((r["model"], r["budget"]), []).append(r)
    base: dict[str, float] = {}
    lines = []
    for (model, budget), pair in groups.items():
        kept = " / ".join(num(r["kept"], ".3f") for r in pair)
        columns = list(zip(*(_metric_cells(r, base) for r in pair)))  # plain, aware
        lines.append([model, budget, kept, " / ".join(factored(r) for r in pair),
                      " / ".join(f"{r['seconds']:.2f}" for r in pair),
                      *(cell for c in columns for cell in (*c, "-")[:2])])
    header = ("model", "budget", "kept plain / aware", "factored plain / aware",
              "s plain / aware", "accuracy / spearman: plain", "aware",
              "shifted / mean cos: plain", "aware", "logits rel-L2 / retrieval: plain", "aware")
    failed = [[r["model"], r["variant"], f"ERROR {r.get('error')}"] for r in rows
              if r["status"] != "ok"]
    return markdown(header, [*lines, *failed])


def compensation_table(rows: list[Row], dense: dict[str, float]) -> str:
    """The weight pipeline alone, then with branches, and the share of its loss against the
    dense model that the branches win back."""
    alone: dict[str, float] = {}

    def cells(r: Row) -> tuple[str, ...]:
        m, minilm = r["metrics"], r["model"] == "minilm"
        loss = 1 - m["spearman"] if minilm else m["logits_rel_l2"]
        won = "-"
        if "compensate" not in r["variant"]:
            alone[r["model"]] = loss
        elif r["model"] in alone and r["model"] in dense:
            gap = alone[r["model"]] - dense[r["model"]]
            won = f"{(alone[r['model']] - loss) / gap:.0%}" if gap > 0 else "-"
        values = ([m["spearman"], m["mean_cosine"], m["retrieval_agreement"]] if minilm
                  else [m["value"], m["shifted"], m["logits_rel_l2"]])
        return (r["stats"].get("branch_weights", "-"), *(num(v, ".4f") for v in values), won)

    header = ("model", "variant", "branch weights", "accuracy / spearman",
              "shifted / mean cos", "logits rel-L2 / retrieval", "loss recovered")
    return table(header, rows, cells)


def tables(rows: list[Row]) -> dict[str, str]:
    dense = {r["model"]: (1 - r["metrics"]["spearman"] if r["model"] == "minilm"
                          else r["metrics"]["logits_rel_l2"])
             for r in ok(rows) if r.get("budget") == "dense"}
    parts = {p: [r for r in rows if r["part"] == p] for p in ("speed", "accuracy",
                                                             "compensation")}
    return {"speed": speed_table(parts["speed"]),
            "accuracy, plain SVD against activation-aware": accuracy_table(parts["accuracy"]),
            "compensation of int4 weight-only": compensation_table(parts["compensation"],
                                                                   dense)}
