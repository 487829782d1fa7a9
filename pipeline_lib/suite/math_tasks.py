"""Families with a numeric answer: bare arithmetic and short word problems."""

from __future__ import annotations

import random

from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.vocab import NAMES, THINGS

JUST_THE_NUMBER = "Answer with just the number."


def number_draft(question: str, answer: int) -> Draft:
    return Draft(f"{question} {JUST_THE_NUMBER}", str(answer), {"check": "number", "answer": answer})


def _expression(rng: random.Random, difficulty: int) -> tuple[str, int]:
    randint = rng.randint
    if difficulty == 1:
        a, b = randint(1, 20), randint(1, 20)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b
    if difficulty == 2:
        shape = rng.randrange(3)
        if shape == 0:
            a, b = randint(3, 15), randint(3, 12)
            return f"{a} * {b}", a * b
        if shape == 1:
            a, b, c = randint(10, 99), randint(10, 99), randint(10, 99)
            return f"{a} + {b} + {c}", a + b + c
        a, b = randint(100, 999), randint(100, 999)
        return f"{a} + {b}", a + b
    shape = rng.randrange(3)
    if shape == 0:
        a, b, c = randint(2, 20), randint(2, 20), randint(2, 9)
        return f"({a} + {b}) * {c}", (a + b) * c
    if shape == 1:
        a, b, c = randint(10, 30), randint(3, 9), randint(1, 50)
        return f"{a} * {b} - {c}", a * b - c
    a, b, c, d = (randint(2, 12) for _ in range(4))
    return f"{a} * {b} + {c} * {d}", a * b + c * d


def arithmetic(rng: random.Random, difficulty: int) -> Draft:
    expression, answer = _expression(rng, difficulty)
    question = rng.choice(["What is {}?", "Calculate {}.", "Compute {}."]).format(expression)
    return number_draft(question, answer)


def _story(rng: random.Random, difficulty: int) -> tuple[str, int]:
    name, pronoun = rng.choice(NAMES)
    they = pronoun.capitalize()
    things = rng.choice(THINGS)
    randint = rng.randint
    if difficulty == 1:
        if rng.random() < 0.5:
            a, b = randint(2, 20), randint(2, 20)
            return (f"{name} has {a} {things}. {they} gets {b} more. "
                    f"How many {things} does {name} have now?"), a + b
        a = randint(10, 30)
        b = randint(1, a - 1)
        return (f"{name} has {a} {things} and gives {b} to a friend. "
                f"How many {things} does {name} have left?"), a - b
    if difficulty == 2:
        if rng.random() < 0.5:
            a, b = randint(5, 30), randint(2, 20)
            c = randint(1, a + b - 1)
            return (f"{name} has {a} {things}. {they} buys {b} more and then gives away {c}. "
                    f"How many {things} does {name} have now?"), a + b - c
        a, b = randint(2, 9), randint(2, 12)
        return (f"{name} has {a} bags with {b} {things} in each bag. "
                f"How many {things} does {name} have in total?"), a * b
    shape = rng.randrange(3)
    if shape == 0:
        a, b, c = randint(2, 20), randint(2, 6), randint(2, 10)
        d = randint(1, a + b * c - 1)
        return (f"{name} has {a} {things}. {they} buys {b} packs with {c} {things} in each pack, "
                f"then gives {d} away. How many {things} does {name} have now?"), a + b * c - d
    if shape == 1:
        count, price = randint(2, 9), randint(2, 9)
        cost = count * price
        bill = next(note for note in (20, 50, 100) if note > cost)
        return (f"{name} buys {count} {things} that cost {price} dollars each and pays with a "
                f"{bill}-dollar bill. How much change, in dollars, does {name} get back?"), bill - cost
    friends, each, kept = randint(2, 6), randint(2, 10), randint(1, 9)
    return (f"{name} has {kept + friends * each} {things}. {they} keeps {kept} and shares the rest "
            f"equally among {friends} friends. How many {things} does each friend get?"), each


def word_problem(rng: random.Random, difficulty: int) -> Draft:
    return number_draft(*_story(rng, difficulty))
