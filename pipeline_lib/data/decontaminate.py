"""Find training rows that share an n-gram of words with an evaluation prompt.

Words are lower-cased runs of letters and digits, so punctuation and spacing
do not hide a copy. An evaluation prompt shorter than ``n`` words is matched
whole, as a run of words anywhere in the row: a short benchmark question
pasted into a training prompt is still found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class NgramIndex:
    """The n-grams of a set of evaluation texts (and the whole of those shorter than n)."""

    def __init__(self, texts: Iterable[str], n: int) -> None:
        self.n = n
        self.grams: dict[int, set[tuple[str, ...]]] = {}
        for text in texts:
            tokens = words(text)
            if not tokens:
                continue
            size = min(n, len(tokens))
            self.grams.setdefault(size, set()).update(_ngrams(tokens, size))

    def __bool__(self) -> bool:
        return bool(self.grams)

    def hits(self, text: str) -> bool:
        """Whether ``text`` holds any indexed n-gram."""
        tokens = words(text)
        return any(not grams.isdisjoint(_ngrams(tokens, size)) for size, grams in self.grams.items())


def _ngrams(tokens: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}
