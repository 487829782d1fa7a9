"""Tolerant reading of free-text answers.

A small chat model rarely answers with the bare value asked for: it writes
"The answer is 42.", "[1, 2, 3]", a bulleted list, or quotes the word. These
helpers pull the value out so the checks grade the content, not the wrapping.
"""

from __future__ import annotations

import re

_NUMBER = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?"
# The lookbehind skips "x2" and keeps the minus in "10-5" from reading as a sign.
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
_ANSWER_RE = re.compile(rf"answer\s*(?:is|was|:|=)?\s*[*_`\"']*\s*({_NUMBER})", re.IGNORECASE)
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"once": 1, "twice": 2, "none": 0}
_NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
# "double", “curly”, `code`, **bold**, or 'single' quotes not part of a word ("don't").
_QUOTED_RE = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|`([^`\n]+)`|\*\*([^*\n]+)\*\*|(?<!\w)\'([^\'\n]+)\'(?!\w)')
_MARKER_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_WRAPPING = " \t\n\"'`*_“”‘’«»"
_TRAILING = ".,;:!?"


def _to_number(token: str) -> float:
    return float(token.replace(",", ""))


def find_numbers(text: str) -> list[float]:
    """Every number in reading order; spelled-out small numbers count only when no digits appear."""
    digits = [_to_number(match.group(0)) for match in _NUMBER_RE.finditer(text)]
    if digits:
        return digits
    return [float(_NUMBER_WORDS[match.group(1).lower()]) for match in _NUMBER_WORD_RE.finditer(text)]


def final_number(text: str) -> float | None:
    """The number the answer commits to: after "answer is" if stated, else the last one."""
    stated = list(_ANSWER_RE.finditer(text))
    if stated:
        return _to_number(stated[-1].group(1))
    numbers = find_numbers(text)
    return numbers[-1] if numbers else None


def strip_marker(line: str) -> str:
    """A list line without its bullet or "1." marker."""
    return _MARKER_RE.sub("", line, count=1)


def is_bullet(line: str) -> bool:
    return bool(_MARKER_RE.match(line)) and bool(strip_marker(line).strip())


def clean_token(token: str) -> str:
    return token.strip(_WRAPPING).rstrip(_TRAILING).strip(_WRAPPING)


def _list_segment(text: str) -> list[str]:
    """The raw pieces of the list the answer gives, before typing them."""
    bracketed = [part for part in re.findall(r"\[([^\[\]]*)\]", text) if part.strip()]
    if bracketed:
        return re.split(r"[,;]", bracketed[-1])
    lines = [line for line in text.splitlines() if line.strip()]
    one_per_line = [clean_token(strip_marker(line)) for line in lines]
    one_per_line = [token for token in one_per_line if token and " " not in token]
    if len(one_per_line) >= 2 and len(one_per_line) >= len(lines) - 1:
        return one_per_line
    if not lines:
        return []
    line = max(reversed(lines), key=lambda candidate: candidate.count(","))
    line = line.rsplit(":", 1)[-1]
    pieces = re.split(r"[,;]|\band\b", line)
    if len(pieces) == 1:
        pieces = pieces[0].split()
    return pieces


def parse_list(text: str, item_type: str) -> list[int] | list[str]:
    """The list an answer gives, as "1, 2, 3", "[1, 2, 3]" or one item per line."""
    pieces = _list_segment(text)
    if item_type == "int":
        return [int(number) for piece in pieces for number in find_numbers(piece) if number == int(number)]
    words = [clean_token(strip_marker(piece)).lower() for piece in pieces]
    return [word for word in words if word]


def normalise_text(text: str, case_sensitive: bool, ignore_spaces: bool) -> str:
    text = " ".join(clean_token(text).split())
    if not case_sensitive:
        text = text.lower()
    if ignore_spaces:
        text = "".join(text.split())
    return text


def text_candidates(text: str, n_tokens: int) -> list[str]:
    """Spans of an answer that could be the intended string, most literal first."""
    candidates = [text]
    candidates += [part for group in _QUOTED_RE.findall(text) for part in group if part]
    for line in text.splitlines():
        if not line.strip():
            continue
        candidates += [line, line.rsplit(":", 1)[-1]]
        tokens = line.split()
        candidates += [" ".join(tokens[:n_tokens]), " ".join(tokens[-n_tokens:])]
    return [candidate for candidate in candidates if candidate.strip()]
