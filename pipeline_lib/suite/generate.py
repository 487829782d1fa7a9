"""Seeded generation of the built-in verifiable task suite.

Each item is drawn from its own RNG keyed by (split, seed, family, difficulty,
index), so the same arguments always give the same items and a longer suite
starts with the shorter one. Train and eval cannot share a prompt: every
prompt belongs to one split by a hash of its text, and each split keeps only
draws that fall on its side.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

from pipeline_lib.core.errors import UserError
from pipeline_lib.suite.counting_tasks import counting
from pipeline_lib.suite.format_tasks import format_task
from pipeline_lib.suite.item import Draft, SuiteItem
from pipeline_lib.suite.list_tasks import filtering, sorting
from pipeline_lib.suite.math_tasks import arithmetic, word_problem
from pipeline_lib.suite.string_tasks import string_transform

BUILDERS: dict[str, Callable[[random.Random, int], Draft]] = {
    "arithmetic": arithmetic,
    "word_problem": word_problem,
    "sorting": sorting,
    "filtering": filtering,
    "counting": counting,
    "string_transform": string_transform,
    "format": format_task,
}
FAMILIES: tuple[str, ...] = tuple(BUILDERS)
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
SPLITS: tuple[str, ...] = ("train", "eval")
# One prompt in EVAL_SHARE lands in eval; the rest in train.
EVAL_SHARE = 5
# Redraws allowed to avoid repeating a prompt already in the suite; small
# spaces (e.g. 3-letter words to reverse) may run out and then repeat.
MAX_REDRAWS = 200


def split_of(prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % EVAL_SHARE == 0 else "train"


def _rng(*key: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, key)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _draw(split: str, seed: int, family: str, level: int, index: int, seen: set[str]) -> Draft:
    fallback = None
    attempt = 0
    while True:
        draft = BUILDERS[family](_rng(split, seed, family, level, index, attempt), level)
        attempt += 1
        if split_of(draft.prompt) != split:
            continue
        if draft.prompt not in seen:
            return draft
        fallback = fallback or draft
        if attempt >= MAX_REDRAWS:
            return fallback


def _check_choice(name: str, given: Sequence[object], allowed: Sequence[object]) -> None:
    unknown = [value for value in given if value not in allowed]
    if unknown or not given:
        allowed_text = ", ".join(map(str, allowed))
        raise UserError(f"suite {name}: {unknown or 'empty list'} not valid; choose from {allowed_text}")


def generate_suite(
    split: str,
    n: int,
    seed: int = 0,
    families: list[str] | None = None,
    difficulty: list[int] | None = None,
) -> list[SuiteItem]:
    """``n`` items cycling through the families (fastest) and difficulty levels."""
    _check_choice("split", [split], SPLITS)
    if not isinstance(n, int) or n < 0:
        raise UserError(f"suite n: expected a non-negative integer, got {n!r}")
    chosen_families = list(families) if families is not None else list(FAMILIES)
    levels = list(difficulty) if difficulty is not None else list(DIFFICULTIES)
    _check_choice("families", chosen_families, FAMILIES)
    _check_choice("difficulty", levels, DIFFICULTIES)
    items: list[SuiteItem] = []
    seen: set[str] = set()
    for index in range(n):
        family = chosen_families[index % len(chosen_families)]
        level = levels[(index // len(chosen_families)) % len(levels)]
        draft = _draw(split, seed, family, level, index, seen)
        seen.add(draft.prompt)
        items.append(SuiteItem(f"{split}-{seed}-{family}-{index}", split, family, level, *draft))
    return items
