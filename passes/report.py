"""The compile report: what each pass did, how long it took, what it could not handle."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from onnxpress.backends.files import replace_atomically


@dataclasses.dataclass
class PassRecord:
    name: str
    spec: str
    seconds: float
    modified: bool
    nodes_before: int
    nodes_after: int
    parameters_before: int
    parameters_after: int
    bytes_before: int
    bytes_after: int
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class OutputCheck:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    ok: bool


@dataclasses.dataclass
class Report:
    pipeline: str
    passes: list[PassRecord] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    check: list[OutputCheck] | None = None
    check_tolerance: float | None = None
    check_atol: float | None = None

    @property
    def check_failed(self) -> bool:
        return self.check is not None and not all(c.ok for c in self.check)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.passes:
            data["summary"] = {
                "nodes": [self.passes[0].nodes_before, self.passes[-1].nodes_after],
                "parameters": [self.passes[0].parameters_before, self.passes[-1].parameters_after],
                "bytes": [self.passes[0].bytes_before, self.passes[-1].bytes_after],
                "seconds": sum(p.seconds for p in self.passes),
            }
        return data

    def write(self, path: str | os.PathLike, *,
              reading: Iterable[str | os.PathLike] = ()) -> None:
        """Write the JSON atomically, never over a file the job reads (``backends.files``)."""
        text = json.dumps(self.to_dict(), indent=2, default=str)
        replace_atomically(path, lambda tmp: tmp.write_text(text), reading=reading,
                           what="report")

    def lines(self) -> list[str]:
        """A readable table, one pass a line, then the notes."""
        rows = [f"{'pass':<28}{'nodes':>16}{'params':>24}{'seconds':>10}"]
        for record in self.passes:
            rows.append(
                f"{record.spec:<28}{record.nodes_before:>7} -> {record.nodes_after:<6}"
                f"{record.parameters_before:>11} -> {record.parameters_after:<10}"
                f"{record.seconds:>10.3f}"
            )
        for note in self.notes + [n for p in self.passes for n in p.notes[:20]]:
            rows.append(f"note: {note}")
        if self.check:
            rows.append(f"check: an output passes when max|diff| <= atol {self.check_atol:g} "
                        f"+ {self.check_tolerance:g} x its largest magnitude")
        for check in self.check or []:
            verdict = "ok" if check.ok else "FAILED"
            rows.append(
                f"check {check.name}: max|diff| {check.max_abs:.3g}, rel {check.max_rel:.3g}, "
                f"cosine {check.cosine:.6f} {verdict}"
            )
        return rows
