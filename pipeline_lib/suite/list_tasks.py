"""Families with a list answer: sorting and filtering numbers or words."""

from __future__ import annotations

import random
from collections.abc import Callable

from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.vocab import WORDS


def list_draft(
    instruction: str, values: list[int] | list[str], answer: list[int] | list[str], result: str
) -> Draft:
    """``result`` ("sorted", "kept") says the reply is the transformed list, not the one shown."""
    kind = "numbers" if isinstance(values[0], int) else "words"
    shown = ", ".join(str(value) for value in values)
    prompt = f"{instruction}: {shown}. Reply with only the {result} {kind}, separated by commas."
    # The input list is kept so the check can grade against echoing it back.
    spec = {"check": "list", "answer": list(answer), "input": list(values),
            "items": "int" if kind == "numbers" else "str"}
    return Draft(prompt, ", ".join(str(value) for value in answer), spec)


def _numbers(rng: random.Random, count: int, low: int, high: int, distinct: bool = True) -> list[int]:
    if distinct:
        return rng.sample(range(low, high + 1), count)
    return [rng.randint(low, high) for _ in range(count)]


def sorting(rng: random.Random, difficulty: int) -> Draft:
    use_words = difficulty > 1 and rng.random() < 0.4
    descending = difficulty > 1 and rng.random() < 0.5
    if use_words:
        values = rng.sample(WORDS, 4 if difficulty == 2 else 6)
        order = "reverse alphabetical order" if descending else "alphabetical order"
        instruction = f"Sort these words in {order}"
    else:
        # Level 1 is three or four single digits: the easiest lists that still need reordering.
        values = {1: lambda: _numbers(rng, rng.randint(3, 4), 1, 9), 2: lambda: _numbers(rng, 6, 1, 100),
                  3: lambda: _numbers(rng, 8, -50, 100, distinct=False)}[difficulty]()
        order = "largest to smallest" if descending else "smallest to largest"
        instruction = f"Sort these numbers from {order}"
    answer = sorted(values, reverse=descending)
    while values == answer:
        rng.shuffle(values)
    return list_draft(instruction, values, answer, "sorted")


def _filtered(make: Callable[[], list[int]], keep: Callable[[int], bool]) -> tuple[list[int], list[int]]:
    """Values where the rule keeps some but not all, so neither echo nor empty answer is right."""
    while True:
        values = make()
        kept = [value for value in values if keep(value)]
        if 0 < len(kept) < len(values):
            return values, kept


def _word_filter(rng: random.Random, count: int) -> Draft:
    letter = rng.choice(sorted({word[0] for word in WORDS}))
    starting = [word for word in WORDS if word[0] == letter]
    others = [word for word in WORDS if word[0] != letter]
    chosen = rng.sample(starting, min(len(starting), rng.randint(1, 3)))
    values = chosen + rng.sample(others, count - len(chosen))
    rng.shuffle(values)
    kept = [word for word in values if word[0] == letter]
    return list_draft(f'Keep only the words that start with the letter "{letter}", in their original order',
                      values, kept, "kept")


def filtering(rng: random.Random, difficulty: int) -> Draft:
    if difficulty > 1 and rng.random() < 0.35:
        return _word_filter(rng, 5 if difficulty == 2 else 7)
    if difficulty == 1:
        parity = rng.choice(["even", "odd"])
        values, kept = _filtered(lambda: _numbers(rng, 4, 1, 20),
                                 lambda value: value % 2 == (0 if parity == "even" else 1))
        rule = f"Keep only the {parity} numbers"
    elif difficulty == 2:
        threshold = rng.randint(20, 80)
        values, kept = _filtered(lambda: _numbers(rng, 6, 1, 100), lambda value: value > threshold)
        rule = f"Keep only the numbers greater than {threshold}"
    else:
        threshold = rng.randint(20, 70)
        values, kept = _filtered(lambda: _numbers(rng, 8, 1, 100),
                                 lambda value: value % 2 == 0 and value > threshold)
        rule = f"Keep only the even numbers greater than {threshold}"
    return list_draft(f"{rule}, in their original order", values, kept, "kept")
