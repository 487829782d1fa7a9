"""The reviser's three decisions and how a quality gap maps onto them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

DECISIONS = ("none", "minor", "major")


def label_decision(gap: float, tau_none: float, tau_major: float) -> str:
    """``none`` if gap <= tau_none, ``minor`` if gap <= tau_major, else ``major``.

    gap is best_score - response_score: how far the response is from the best
    one, so a negative gap (the response beat the "best") is ``none`` too.
    """
    if tau_none > tau_major:
        raise ValueError(f"tau_none ({tau_none}) must not exceed tau_major ({tau_major})")
    if math.isnan(gap):
        raise ValueError("the quality gap is NaN")
    if gap <= tau_none:
        return "none"
    return "minor" if gap <= tau_major else "major"


def check_decision(decision: str) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"unknown reviser decision {decision!r}; expected one of {', '.join(DECISIONS)}")
    return decision


def decision_counts(examples_or_decisions: Iterable[Any]) -> dict[str, int]:
    """How many of each decision, always with all three keys.

    Accepts decision strings or objects with a ``decision`` attribute
    (ReviserExample, ParsedRevision). Malformed parses (decision None) are not
    counted here; their ``malformed`` reasons are the place to count them.
    """
    counts = dict.fromkeys(DECISIONS, 0)
    for item in examples_or_decisions:
        decision = item if isinstance(item, str) else item.decision
        if decision is not None:
            counts[check_decision(decision)] += 1
    return counts
