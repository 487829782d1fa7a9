"""Graded checks for answers with one right value: a number, a list, a string.

Scores are partial credit in [0, 1] (1 only for the right value) because the
self-improvement rounds use the gap between scores to decide how much a
response must be revised: "41 for 42" should rank above "no number at all".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rapidfuzz.distance import Levenshtein

from pipeline_lib.suite.extract import (
    final_number,
    find_numbers,
    normalise_text,
    parse_list,
    text_candidates,
)
from pipeline_lib.suite.item import Verdict

# Relative error at which a near-miss number stops earning credit.
NUMBER_TOLERANCE = 0.25
# Credit ceiling for a wrong final number, and for the right one said in passing.
NEAR_MISS_CREDIT = 0.5
# Share of list credit for having the right elements; the rest is for order.
ELEMENT_WEIGHT = 0.3


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_number(spec: dict[str, Any], response: str) -> Verdict:
    expected = float(spec["answer"])
    got = final_number(response)
    if got is None:
        return Verdict(0.0, [f"expected {_show(expected)}, found no number"])
    if got == expected:
        return Verdict(1.0)
    reasons = [f"expected {_show(expected)}, got {_show(got)}"]
    relative_error = abs(got - expected) / max(abs(expected), 1.0)
    score = NEAR_MISS_CREDIT * max(0.0, 1.0 - relative_error / NUMBER_TOLERANCE)
    if expected in find_numbers(response):
        reasons.append(f"{_show(expected)} appears but is not the final answer")
        score = max(score, NEAR_MISS_CREDIT)
    return Verdict(score, reasons)


def _lcs_length(first: list[Any], second: list[Any]) -> int:
    previous = [0] * (len(second) + 1)
    for a in first:
        current = [0]
        for j, b in enumerate(second):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def check_list(spec: dict[str, Any], response: str) -> Verdict:
    """Credit for the right elements (multiset F1) and, weighted more, their order (LCS).

    Order dominates because echoing the input already has every element right.
    """
    expected = list(spec["answer"])
    if spec["items"] == "str":
        expected = [str(word).lower() for word in expected]
    got = parse_list(response, spec["items"])
    if got == expected:
        return Verdict(1.0)
    if not got:
        return Verdict(0.0, [f"expected {expected}, found no list"])
    shared = sum((Counter(expected) & Counter(got)).values())
    f1 = 2 * shared / (len(expected) + len(got))
    order = _lcs_length(expected, got) / max(len(expected), len(got))
    reasons = [f"expected {expected}, got {got}"]
    missing = list((Counter(expected) - Counter(got)).elements())
    extra = list((Counter(got) - Counter(expected)).elements())
    if missing:
        reasons.append(f"missing {missing}")
    if extra:
        reasons.append(f"unexpected {extra}")
    if not missing and not extra:
        reasons.append("right elements, wrong order")
    return Verdict(ELEMENT_WEIGHT * f1 + (1 - ELEMENT_WEIGHT) * order, reasons)


def check_text(spec: dict[str, Any], response: str) -> Verdict:
    """Exact match on the best span of the answer, else edit-distance similarity.

    Similarity counts only beyond what repeating the task's input (``source``)
    would earn: "banana" is 4/6 of the way to "ananab" by edit distance, and
    "red, blue" nearly equals "red-blue", yet echoing them solved nothing.
    """
    case_sensitive = bool(spec.get("case_sensitive", False))
    ignore_spaces = bool(spec.get("ignore_spaces", False))
    expected = normalise_text(str(spec["answer"]), case_sensitive, ignore_spaces)
    n_tokens = max(1, len(str(spec["answer"]).split()))

    def similarity(candidate: str) -> float:
        normalised = normalise_text(candidate, case_sensitive, ignore_spaces)
        return Levenshtein.normalized_similarity(normalised, expected)

    def best_span(text: str) -> tuple[str, float]:
        span = max(text_candidates(text, n_tokens), key=similarity, default="")
        return span, similarity(span) if span else 0.0

    best, raw = best_span(response)
    if raw == 1.0:
        return Verdict(1.0)
    echo = best_span(str(spec["source"]))[1] if "source" in spec else 0.0
    score = raw if echo >= 1.0 else max(0.0, (raw - echo) / (1.0 - echo))
    shown = best.strip() if len(best) <= 80 else best.strip()[:77] + "..."
    reasons = [f"expected {spec['answer']!r}, closest was {shown!r}"]
    if best and raw <= echo:
        reasons.append("no closer than repeating the input")
    return Verdict(score, reasons)
