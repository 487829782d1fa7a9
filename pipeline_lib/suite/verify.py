"""Scoring answers against suite items, one at a time or as a summary."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.suite.checks import check_list, check_number, check_text
from pipeline_lib.suite.constraints import check_format
from pipeline_lib.suite.generate import FAMILIES
from pipeline_lib.suite.item import SuiteItem, Verdict, spec_of

CHECKS: dict[str, Callable[[dict[str, Any], str], Verdict]] = {
    "number": check_number,
    "list": check_list,
    "text": check_text,
    "format": check_format,
}

ItemOrRow = SuiteItem | Mapping[str, Any]


def verify(item_or_row: ItemOrRow, response: str | None) -> Verdict:
    """Graded score in [0, 1] of ``response`` for an item or its stored row."""
    spec = spec_of(item_or_row)
    check = CHECKS.get(spec["check"])
    if check is None:
        raise UserError(f"suite spec: unknown check {spec['check']!r}; expected one of {', '.join(CHECKS)}")
    if response is None or not response.strip():
        return Verdict(0.0, ["empty response"])
    verdict = check(spec, response)
    return Verdict(min(1.0, max(0.0, verdict.score)), verdict.reasons)


def _stats(scores: list[float]) -> dict[str, float | int]:
    count = len(scores)
    return {
        "mean_score": sum(scores) / count if count else 0.0,
        "pass_rate": sum(score == 1.0 for score in scores) / count if count else 0.0,
        "count": count,
    }


def summarize(items: Sequence[ItemOrRow], responses: Sequence[str | None]) -> dict[str, Any]:
    """Mean score, pass rate (score 1) and count: overall, per family, per difficulty."""
    if len(items) != len(responses):
        raise UserError(f"suite summary: {len(items)} items but {len(responses)} responses")
    scored = []
    for entry, response in zip(items, responses):
        item = entry if isinstance(entry, SuiteItem) else SuiteItem.from_row(entry)
        scored.append((item.family, item.difficulty, verify(item, response).score))
    return summarize_scores(scored)


def summarize_scores(scored: Sequence[tuple[str, int, float]]) -> dict[str, Any]:
    """The same summary from scores already computed, as (family, difficulty, score) triples."""
    by_family: dict[str, list[float]] = defaultdict(list)
    by_level: dict[int, list[float]] = defaultdict(list)
    for family, level, score in scored:
        by_family[family].append(score)
        by_level[level].append(score)
    ordered = [family for family in FAMILIES if family in by_family] + sorted(set(by_family) - set(FAMILIES))
    return {
        "overall": _stats([score for _, _, score in scored]),
        "families": {family: _stats(by_family[family]) for family in ordered},
        "difficulties": {str(level): _stats(by_level[level]) for level in sorted(by_level)},
    }
