"""Checks for format instructions: each constraint earns credit in [0, 1].

The item's score is the mean over its constraints, so an answer that follows
two of three instructions scores 2/3. Count-like constraints (bullets, word
limits) also give partial credit by how far off the count is.

Instructions the reply repeats (kept in the spec as ``instructions``) are cut
before checking: echoing 'Write at least 8 words about coffee. Include the
word "sugar".' would otherwise meet both constraints without writing anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.suite.extract import is_bullet, strip_marker
from pipeline_lib.suite.item import Verdict

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")


def count_words(text: str) -> int:
    return sum(len(_WORD_RE.findall(strip_marker(line))) for line in text.splitlines())


def contains_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        parsed = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _json_key(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    parsed = _json_object(text)
    key = constraint["key"]
    if parsed is None:
        return 0.0, "no valid JSON object found"
    if key not in parsed:
        return 0.5, f"JSON object lacks the key {key!r}"
    return 1.0, ""


def _bullets(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    wanted = constraint["n"]
    found = sum(is_bullet(line) for line in text.splitlines())
    if found == wanted:
        return 1.0, ""
    return max(0.0, 1.0 - abs(found - wanted) / wanted), f"expected {wanted} bullet points, found {found}"


def _lowercase(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    capitals = sorted({char for char in text if char.isupper()})
    if not capitals:
        return 1.0, ""
    return 0.0, f"not all lowercase (found {''.join(capitals[:10])})"


def _min_words(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    wanted, found = constraint["n"], count_words(text)
    if found >= wanted:
        return 1.0, ""
    return found / wanted, f"expected at least {wanted} words, found {found}"


def _max_words(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    limit, found = constraint["n"], count_words(text)
    if found <= limit:
        return 1.0, ""
    return max(0.0, 1.0 - (found - limit) / limit), f"expected at most {limit} words, found {found}"


def _include(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    word = constraint["word"]
    return (1.0, "") if contains_word(text, word) else (0.0, f"missing the word {word!r}")


def _exclude(constraint: dict[str, Any], text: str) -> tuple[float, str]:
    word = constraint["word"]
    return (0.0, f"uses the forbidden word {word!r}") if contains_word(text, word) else (1.0, "")


CONSTRAINT_CHECKS: dict[str, Callable[[dict[str, Any], str], tuple[float, str]]] = {
    "json_key": _json_key,
    "bullets": _bullets,
    "lowercase": _lowercase,
    "min_words": _min_words,
    "max_words": _max_words,
    "include": _include,
    "exclude": _exclude,
}


def without_instructions(text: str, instructions: list[str]) -> str:
    """``text`` minus every instruction it repeats, matched by words whatever the case or punctuation."""
    for sentence in instructions:
        words = _WORD_RE.findall(sentence)
        if words:
            pattern = r"(?<![A-Za-z0-9])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![A-Za-z0-9])"
            text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    return text


def check_format(spec: dict[str, Any], response: str) -> Verdict:
    text = without_instructions(response, spec.get("instructions", []))
    if text != response and count_words(text) == 0:
        return Verdict(0.0, ["only repeats the instructions"])
    credits, reasons = [], []
    for constraint in spec["constraints"]:
        check = CONSTRAINT_CHECKS.get(constraint.get("type"))
        if check is None:
            raise UserError(f"suite spec: unknown format constraint {constraint.get('type')!r}")
        credit, reason = check(constraint, text)
        credits.append(credit)
        if reason:
            reasons.append(reason)
    return Verdict(sum(credits) / len(credits), reasons)
