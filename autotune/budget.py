"""The accuracy budget of ``onnxpress search``: ``METRIC OP AMOUNT``, one line a user writes.

- ``top1>=-1pt``: top-1 accuracy at most one percentage point below the original model's;
- ``perplexity<=+5%``: perplexity at most 5% above the original's;
- ``spearman>=0.99``: an absolute floor (no sign, no unit);
- ``cosine>=0.995``: the mean output cosine against the original model on the data.

A signed amount is relative to the original model's value on the same data: ``pt`` in
percentage points (0.01 of a fraction metric), ``%`` a relative change of the value, neither
an absolute difference. An unsigned amount without a unit is the bound itself. The bound
must point the way the metric gets worse (``top1<=`` or ``perplexity>=`` is refused, as is
a budget that would demand a better model than the original: ``top1>=+1pt``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from onnxpress.errors import BadInputError

__all__ = ["Budget", "METRICS", "parse_budget"]

#: budget name -> (the evaluation's metric, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "top1": ("top1_accuracy", True),
    "retrieval": ("retrieval_agreement", True),
    "spearman": ("spearman", True),
    "cosine": ("cosine", True),
    "perplexity": ("perplexity", False),
}

_SYNTAX = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=)\s*([+-])?\s*([0-9]*\.?[0-9]+)\s*(pt|%)?\s*$")


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str  # as written: top1, perplexity, ...
    metric: str  # the evaluation's metric it reads
    higher_is_better: bool
    amount: float  # signed for relative kinds
    kind: Literal["absolute", "points", "percent", "difference"]
    text: str

    def limit(self, original: float | None) -> float:
        """The worst value the budget accepts, given the original model's value."""
        if self.kind == "absolute":
            return self.amount
        if original is None:
            raise BadInputError(f"budget {self.text!r} is relative: it needs the original "
                                "model's value")
        if self.kind == "points":
            return original + self.amount / 100
        if self.kind == "percent":
            return original * (1 + self.amount / 100)
        return original + self.amount

    def holds(self, value: float, original: float | None) -> bool:
        limit = self.limit(original)
        return value >= limit if self.higher_is_better else value <= limit

    def slack(self, value: float, original: float | None) -> float:
        """How far ``value`` is inside the budget (negative: outside), in the metric's
        units: what a search ranks candidates that spend the same speed by."""
        limit = self.limit(original)
        return value - limit if self.higher_is_better else limit - value

    def __str__(self) -> str:
        return self.text


def parse_budget(text: str) -> Budget:
    """``top1>=-1pt`` -> :class:`Budget`; a one-line error naming what is wrong."""
    match = _SYNTAX.match(text.lower())
    if match is None:
        raise BadInputError(f"budget {text!r}: write METRIC>=AMOUNT or METRIC<=AMOUNT, e.g. "
                            "top1>=-1pt, perplexity<=+5%, spearman>=0.99, cosine>=0.995")
    name, op, sign, number, unit = match.groups()
    if name not in METRICS:
        raise BadInputError(f"budget {text!r}: no metric {name!r}; known: "
                            f"{', '.join(METRICS)}")
    metric, higher = METRICS[name]
    if (op == ">=") != higher:
        raise BadInputError(f"budget {text!r}: {name} is better {'higher' if higher else 'lower'}"
                            f", so its bound is {'>=' if higher else '<='}")
    amount = float(number)
    if sign is None and unit is not None:
        raise BadInputError(f"budget {text!r}: a {unit} amount is relative to the original "
                            f"model: give its sign ({name}{op}{'-' if higher else '+'}"
                            f"{number}{unit})")
    if sign is None:
        return Budget(name, metric, higher, amount, "absolute", text.strip())
    amount = -amount if sign == "-" else amount
    if amount != 0 and (amount > 0) == higher:
        raise BadInputError(f"budget {text!r}: asks for a better model than the original; "
                            f"a budget allows a loss ({name}{op}{'-' if higher else '+'}"
                            f"{number}{unit or ''})")
    kind = {"pt": "points", "%": "percent", None: "difference"}[unit]
    return Budget(name, metric, higher, amount, kind, text.strip())
