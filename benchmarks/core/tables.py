"""The one table writer: markdown, which reads as well in a terminal as in the README.

A row that failed or was unavailable gets its reason in the first cell after the ones
that name it, and empty cells after that, so the columns still line up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

Row = dict[str, Any]


def markdown(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        padded = [*map(str, cells), *[""] * (len(header) - len(cells))]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def failure(r: Row) -> str:
    """A failed row's one cell: ``skipped: reason`` or ``ERROR reason``."""
    if r["status"] == "unavailable":
        return f"skipped: {r['reason']}"
    return f"ERROR {r.get('error', '')}"


def table(header: Sequence[str], rows: Iterable[Row], cells: Callable[[Row], Sequence[object]],
          names: Sequence[str] = ("model", "variant")) -> str:
    """``markdown`` over suite rows: the ``names`` columns, then ``cells(row)`` for a row
    that is ok, else its failure."""
    lines = []
    for r in rows:
        lead = [r.get(name, "-") for name in names]
        lines.append([*lead, *(cells(r) if r["status"] == "ok" else (failure(r),))])
    return markdown(header, lines)


def num(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def ratio(value: float | None) -> str:
    return num(value, ".2f", "x")


def mb(size_bytes: int | float) -> str:
    return f"{size_bytes / 2**20:.2f}"
