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


def _edit_distance(first: list[Any], second: list[Any]) -> int:
    """Insertions plus deletions: a missing or extra element costs 1, a misplaced one 2."""
    return len(first) + len(second) - 2 * _lcs_length(first, second)


def _typed(values: list[Any], item_type: str) -> list[Any]:
    return [str(value).lower() for value in values] if item_type == "str" else list(values)


def check_list(spec: dict[str, Any], response: str) -> Verdict:
    """Credit for the share of the way from the task's input list to the answer.

    score = 1 - distance(reply, answer) / distance(input, answer), so echoing
    the input (``input`` in the spec) scores 0, the answer 1, and a reply earns
    credit only by being closer than the echo: sorted but one element short,
    or one swap away from sorted. Without a stored input, the no-effort reply
    is the empty list and the denominator is the answer's length.
    """
    expected = _typed(spec["answer"], spec["items"])
    got = parse_list(response, spec["items"])
    if got == expected:
        return Verdict(1.0)
    if not got:
        return Verdict(0.0, [f"expected {expected}, found no list"])
    source = _typed(spec.get("input", []), spec["items"])
    distance = _edit_distance(got, expected)
    # At least 1 so a degenerate spec (input equal to the answer) cannot divide by zero.
    budget = max(1, _edit_distance(source, expected))
    reasons = [f"expected {expected}, got {got}"]
    missing = list((Counter(expected) - Counter(got)).elements())
    extra = list((Counter(got) - Counter(expected)).elements())
    if missing:
        reasons.append(f"missing {missing}")
    if extra:
        reasons.append(f"unexpected {extra}")
    if not missing and not extra:
        reasons.append("right elements, wrong order")
    if got == source:
        reasons.append("same as the input list")
    elif distance >= budget and "input" in spec:
        reasons.append("no closer to the answer than the input list")
    return Verdict(max(0.0, 1.0 - distance / budget), reasons)


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
