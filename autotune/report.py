"""What a search leaves in its folder for people and for ``compile``:

- ``report.html``: the front as a plot (every candidate, the front joined, the original and
  the budget's limit marked, each point numbered by its trial), the front as a table with
  each pipeline, what each family gives on its own (the cheapest single-family candidate
  within the budget), what was rejected and why (did not compile, or outside the budget),
  and the families the model does not offer;
- ``front.png``: the plot alone (matplotlib; without it the page says so);
- ``chosen.txt`` and ``chosen.toml``: the chosen pipeline as a ``--passes`` string and as a
  ``--config`` file, either of which makes ``onnxpress compile`` write the chosen
  candidate's bytes again.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from onnxpress.autotune.space import Space
from onnxpress.autotune.trials import Candidate
from onnxpress.backends.files import replace_atomically

__all__ = ["alone", "write_report"]


def alone(candidates: Iterable[Candidate], space: Space) -> dict[str, Candidate | None]:
    """Per family, the cheapest candidate within the budget that changes only that family
    (``quantize``: int8 with no structural pass), None when none was tried or held."""
    off = {k.family: k.values[0] for k in space.knobs}
    best: dict[str, Candidate | None] = dict.fromkeys(off)
    for c in candidates:
        on = [f for f, v in c.settings.items() if v != off.get(f)]
        if len(on) != 1 or not c.holds or c.cost is None:
            continue
        family = on[0]
        if best[family] is None or c.cost < best[family].cost:
            best[family] = c
    return best


def write_report(folder: Path, summary: dict[str, Any], candidates: Sequence[Candidate],
                 front: Sequence[Candidate], chosen: Candidate | None, space: Space,
                 calibration: str | None, limit: float) -> Path:
    """Write the report files into ``folder``; return the page's path."""
    if chosen is not None:
        _write(folder / "chosen.txt", chosen.pipeline + "\n")
        toml = f"passes = {json.dumps(chosen.pipeline)}\n"
        if calibration is not None:
            toml += f"calibration = {json.dumps(os.path.abspath(calibration))}\n"
        _write(folder / "chosen.toml", toml)
    plot = _plot(candidates, front, summary, limit)
    if plot is not None:
        replace_atomically(folder / "front.png", lambda tmp: tmp.write_bytes(plot))
    page = _page(summary, candidates, front, chosen, space, plot, limit)
    _write(folder / "report.html", page)
    return folder / "report.html"


def _write(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _plot(candidates: Sequence[Candidate], front: Sequence[Candidate],
          summary: dict[str, Any], limit: float) -> bytes | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return None
    built = [c for c in candidates if c.cost is not None and c.value is not None]
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=110)
    for held, colour, label in ((False, "#c0c0c0", "outside the budget"),
                                (True, "#7aa6d6", "within the budget")):
        group = [c for c in built if c.holds == held]
        axes.scatter([c.cost for c in group], [c.value for c in group], s=22, c=colour,
                     label=label, zorder=2)
    axes.plot([c.cost for c in front], [c.value for c in front], "o-", c="#c2452d", ms=6,
              label="front", zorder=3)
    for c in built:
        axes.annotate(str(c.number), (c.cost, c.value), textcoords="offset points",
                      xytext=(4, 3), fontsize=7, color="#444444")
    axes.scatter([1.0], [summary["original"]], marker="*", s=120, c="black", label="original",
                 zorder=4)
    axes.axhline(limit, ls="--", lw=1, c="#888888", label=f"budget {summary['budget']}")
    axes.set_xlabel(f"{summary['objective']} relative to the original (lower is better)")
    axes.set_ylabel(summary["metric"])
    axes.set_title(f"{Path(summary['model']).name}: {len(built)} candidates built")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    # no timestamp or software tag in the file: the same search draws the same bytes
    figure.savefig(buffer, format="png", metadata={"Software": None})
    pyplot.close(figure)
    return buffer.getvalue()


def _page(summary: dict[str, Any], candidates: Sequence[Candidate],
          front: Sequence[Candidate], chosen: Candidate | None, space: Space,
          plot: bytes | None, limit: float) -> str:
    e = html.escape
    parts = [f"<!doctype html><meta charset=utf-8><title>onnxpress search: "
             f"{e(Path(summary['model']).name)}</title>", _STYLE,
             f"<h1>Search: {e(Path(summary['model']).name)}</h1>",
             "<p>" + e(f"budget {summary['budget']} on {summary['data']} (original "
                       f"{summary['original']:.4f}, limit {limit:.4f}); objective "
                       f"{summary['objective']}; {len(candidates)} trials") + "</p>"]
    if chosen is not None:
        parts.append(f"<p><b>chosen</b>: trial {chosen.number}, <code>{e(chosen.pipeline)}"
                     f"</code>, {summary['metric']} {chosen.value:.4f}, {summary['objective']} "
                     f"{chosen.cost:.3f}x the original's</p>")
        if summary.get("test") is not None:
            test = summary["test"]
            parts.append("<p>" + e(f"on the test set {test['data']}: original "
                                   f"{test['original']:.4f}, chosen {test['chosen']:.4f}")
                         + "</p>")
    else:
        parts.append("<p><b>no candidate is within the budget</b></p>")
    if summary.get("raced"):
        parts.append("<p>" + e(f"{summary['objective']} of trials "
                               f"{', '.join(map(str, summary['raced']))}: the final race, "
                               "timed together in one run; of the others, each trial's own "
                               "run beside the original") + "</p>")
    if plot is not None:
        parts.append(f"<img alt='the front' src='data:image/png;base64,"
                     f"{base64.b64encode(plot).decode()}'>")
    else:
        parts.append("<p>(no plot: matplotlib is not installed)</p>")
    parts.append("<h2>Front</h2>")
    parts.append(_table(("trial", summary["objective"], summary["metric"], "pipeline"),
                        [(c.number, f"{c.cost:.3f}", f"{c.value:.4f}", c.pipeline)
                         for c in front]))
    parts.append("<h2>Each family alone</h2>")
    best = alone(candidates, space)
    parts.append(_table(("family", "what the model offers", "trial", summary["objective"],
                         summary["metric"], "pipeline"),
                        [(k.family, k.offer, "", "", "", "none tried within the budget")
                         if (c := best[k.family]) is None else
                         (k.family, k.offer, c.number, f"{c.cost:.3f}", f"{c.value:.4f}",
                          c.pipeline) for k in space.knobs]))
    outside = [c for c in candidates if c.rejected is None and not c.holds]
    rejected = [c for c in candidates if c.rejected is not None]
    parts.append("<h2>Rejected</h2>")
    parts.append(_table(("trial", "pipeline", "why"),
                        [(c.number, c.pipeline, c.rejected) for c in rejected]
                        + [(c.number, c.pipeline, f"outside the budget: {summary['metric']} "
                            f"{c.value:.4f} against the limit {limit:.4f}") for c in outside]))
    if space.notes:
        parts.append("<h2>Not offered</h2><ul>"
                     + "".join(f"<li>{e(n)}</li>" for n in space.notes) + "</ul>")
    parts.append("<h2>Every trial</h2>")
    parts.append(_table(("trial", summary["objective"], summary["metric"], "within",
                         "pipeline"),
                        [(c.number, "" if c.cost is None else f"{c.cost:.3f}",
                          "" if c.value is None else f"{c.value:.4f}",
                          "yes" if c.holds else "no", c.pipeline) for c in candidates]))
    return "\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = ("<style>body{font:14px sans-serif;max-width:70em;margin:2em auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
          "text-align:left}code{background:#f4f4f4}</style>")
