"""The accuracy budget a search is given: parsed from one line, relative or absolute, and
refused in one line when it makes no sense."""

from __future__ import annotations

import pytest

from onnxpress.autotune.budget import parse_budget
from onnxpress.errors import BadInputError


@pytest.mark.parametrize("text, original, inside, outside", [
    ("top1>=-1pt", 0.9778, 0.968, 0.967),        # 97.78% - 1 point = 96.78%
    ("perplexity<=+5%", 42.09, 44.19, 44.20),    # 42.09 * 1.05 = 44.1945
    ("spearman>=0.99", None, 0.99, 0.9899),      # absolute: no original needed
    ("cosine >= 0.995", None, 0.9951, 0.9949),
    ("perplexity<=+2", 42.09, 44.09, 44.10),     # a signed number: a difference
    ("TOP1>=-0.5pt", 0.5, 0.495, 0.4949),
])
def test_a_budget_accepts_what_it_allows_and_no_more(text, original, inside, outside) -> None:
    budget = parse_budget(text)
    assert budget.holds(inside, original)
    assert not budget.holds(outside, original)
    assert budget.slack(inside, original) >= 0 > budget.slack(outside, original)


def test_the_bound_is_what_the_units_say() -> None:
    assert parse_budget("top1>=-1pt").limit(0.9) == pytest.approx(0.89)
    assert parse_budget("perplexity<=+5%").limit(40.0) == pytest.approx(42.0)
    assert parse_budget("spearman>=0.99").limit(0.5) == 0.99
    assert parse_budget("perplexity<=+5%").metric == "perplexity"
    assert parse_budget("top1>=-1pt").metric == "top1_accuracy"


@pytest.mark.parametrize("text, says", [
    ("top1<=-1pt", "better higher"),            # the wrong direction
    ("perplexity>=+5%", "better lower"),
    ("top1>=+1pt", "better model than the original"),
    ("perplexity<=-5%", "better model than the original"),
    ("top1>=1pt", "give its sign"),
    ("accuracy>=0.9", "no metric 'accuracy'"),
    ("top1 about 1", "write METRIC>=AMOUNT"),
    ("", "write METRIC>=AMOUNT"),
])
def test_a_budget_that_makes_no_sense_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(BadInputError, match=says) as caught:
        parse_budget(text)
    assert "\n" not in str(caught.value)


def test_a_relative_budget_needs_the_original_value() -> None:
    with pytest.raises(BadInputError, match="relative"):
        parse_budget("top1>=-1pt").limit(None)
