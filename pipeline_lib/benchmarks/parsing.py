"""Reading judges' verdicts back, and undoing the judge's preference for a position.

A judgment that does not parse is None, never 0: a 0 averaged into an
MT-Bench score or a win rate would look like a bad answer, when it is a bad
judge. Callers count the Nones and report them.

Positions: the output shown first is slot "A" (MT-Bench's Assistant A,
AlpacaEval's identifier "m"), the output shown second is slot "B" (Assistant B,
identifier "M"). A judgment of one order is a verdict ("A", "B", "tie") or a
probability that slot B is preferred (from log-probabilities).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Union

Verdict = Literal["A", "B", "tie"]
Judgment = Union[Verdict, float, None]  # a verdict, or P(slot B preferred); None: did not parse

RATING_MIN, RATING_MAX = 1.0, 10.0
TIE_DELTA = 0.1  # FastChat: two scores this close are a tie

# FastChat's patterns (fastchat/llm_judge/common.py), searched in this order, first match wins.
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
_TWO_SCORES = re.compile(r"\[\[(\d+\.?\d*),\s?(\d+\.?\d*)\]\]")
_TWO_SCORES_BACKUP = re.compile(r"\[(\d+\.?\d*),\s?(\d+\.?\d*)\]")
_PAIR_MARKERS: tuple[tuple[str, Verdict], ...] = (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie"))
# A lone m or M: not inside a word and not the "m" of "I'm".
_ALPACA_LABEL = re.compile(r"(?<![\w'’])([mM])(?![\w'’])")


def parse_rating(text: str | None) -> float | None:
    """The 1-10 rating in a single-grading judgment: `[[r]]`, else FastChat's backup `[r]`; None if neither.

    FastChat keeps whatever number matches; a value outside 1-10 is None here because it is not a rating on
    the scale the judge was given: it is a citation or year the backup pattern caught ("see [42]"), or a
    judge that misread the scale, and averaging it would move the score by more than any real difference.
    Only the first match of the first pattern that matches is read, as in FastChat.
    """
    if not text:
        return None
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if match is None:
        return None
    rating = float(match.group(1))  # not FastChat's ast.literal_eval, which rejects "[[07]]"
    return rating if RATING_MIN <= rating <= RATING_MAX else None


def parse_pair_verdict(
    text: str | None, output_format: str = "[[A]]", *, reject_ambiguous: bool = False
) -> Verdict | None:
    """MT-Bench pairwise verdict, in slot terms: "A", "B", "tie" (`[[C]]`), or None.

    `[[A]]` format (pair-v2, pair-math-v1): FastChat checks `[[A]]`, then `[[B]]`, then `[[C]]`, anywhere in
    the text, and the first found wins. A judge that repeats the instructions ("[[A]]" if A is better,
    "[[B]]" if ...) is thereby read as "A"; `reject_ambiguous=True` makes that None instead, a departure
    worth taking for small judges, which echo instructions often.
    `[[rating_a,rating_b]]` format (FastChat's older pair-v1): two scores, `[[a, b]]` then the backup
    `[a, b]`, a tie when they differ by at most 0.1.
    """
    if not text:
        return None
    if output_format == "[[A]]":
        found = [verdict for marker, verdict in _PAIR_MARKERS if marker in text]
        if not found or (reject_ambiguous and len(found) > 1):
            return None
        return found[0]
    if output_format == "[[rating_a,rating_b]]":
        match = _TWO_SCORES.search(text) or _TWO_SCORES_BACKUP.search(text)
        if match is None:
            return None
        a, b = (float(g) for g in match.groups())
        return "tie" if abs(a - b) <= TIE_DELTA else ("A" if a > b else "B")
    raise ValueError(f"unknown pairwise output format {output_format!r}")


def parse_alpaca_choice(text: str | None) -> Literal["m", "M"] | None:
    """The identifier an AlpacaEval judge answered with, when its log-probabilities are not available.

    AlpacaEval itself only reads log-probabilities (max_tokens 1), so this reading is alignflow's: the
    stripped answer (quotes, backticks and final punctuation removed) if it is exactly "m" or "M", otherwise
    the lone m/M tokens in the text if they are all the same identifier. Both identifiers, or neither: None.
    """
    if not text:
        return None
    bare = text.strip().strip("\"'`*.").strip()
    if bare in ("m", "M"):
        return bare  # type: ignore[return-value]
    labels = set(_ALPACA_LABEL.findall(text))
    return labels.pop() if len(labels) == 1 else None  # type: ignore[return-value]


def preference_from_logprobs(logprob_m: float | None, logprob_M: float | None) -> float | None:
    """P(the output shown as "M", slot B, is preferred) = p(M) / (p(m) + p(M)).

    AlpacaEval's weighted annotator (logprob_parser, numerator "m", denominator {m, M}) computes
    p(m) / (p(m) + p(M)) and stores 2 - that, so its preference runs from 1 (output_1, shown as "m", wins) to
    2 (output_2, shown as "M", wins); this returns that preference minus 1. A label missing from the judge's
    top log-probabilities has probability 0 (pass None or -inf); both missing: None, a failed judgment.
    """
    lm = -math.inf if logprob_m is None else float(logprob_m)
    lM = -math.inf if logprob_M is None else float(logprob_M)
    if math.isnan(lm) or math.isnan(lM) or (lm == -math.inf and lM == -math.inf):
        return None
    # The logistic of the difference, computed on the side that cannot overflow.
    diff = lM - lm
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def alpaca_choice_slot(choice: Literal["m", "M"] | None) -> Verdict | None:
    return {"m": "A", "M": "B"}.get(choice)  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------- position debiasing


def slot_b_score(judgment: Judgment) -> float | None:
    """A judgment as P(slot B preferred): "A" 0, "B" 1, "tie" ½, a probability as itself."""
    if judgment is None:
        return None
    if isinstance(judgment, str):
        return {"A": 0.0, "B": 1.0, "tie": 0.5}[judgment]
    if math.isnan(judgment) or not 0.0 <= judgment <= 1.0:
        raise ValueError(f"a preference must be a probability in [0, 1], got {judgment}")
    return float(judgment)


def model_preference(judgment: Judgment, model_slot: Literal["A", "B"]) -> float | None:
    """The preference for the model, in [0, 1], from one order's judgment; ties ½, None if it did not parse.

    With AlpacaEval's seeded random order this undoes the switch (its `3 - preference`).
    """
    score = slot_b_score(judgment)
    if score is None:
        return None
    return score if model_slot == "B" else 1.0 - score


def combine_orders(model_as_a: Judgment, model_as_b: Judgment) -> float | None:
    """The model's preference from both orders: the model shown first, then the model shown second.

    Two verdicts follow FastChat (show_result): the same winner in both orders wins (1 or 0); anything else
    (the orders disagree, either is a tie) is a tie, ½, so a judge that always picks one slot yields ½,
    not a win. Probabilities (log-probability judges) are averaged, which cancels a constant pull
    toward one slot. Either order unparsed: None, as FastChat drops the pair.
    """
    first, second = model_preference(model_as_a, "A"), model_preference(model_as_b, "B")
    if first is None or second is None:
        return None
    if isinstance(model_as_a, str) and isinstance(model_as_b, str):
        return first if first == second else 0.5
    return (first + second) / 2.0


def _side(score: float) -> Verdict:
    return "tie" if score == 0.5 else ("B" if score > 0.5 else "A")


@dataclass(frozen=True)
class PositionBias:
    """How much a judge decides by position, over items judged in both orders.

    Of the `n` items whose two orders both parsed:
    - `follows_position`: share where both orders chose the same slot, so the verdict went with the position
      and not with the output (a judge that reads content has this near 0);
    - `consistent`: share where both orders chose the same output, or both said tie;
    - the rest had a tie in one order only;
    - `slot_b_rate`: mean P(slot B preferred) over both orders. Each output sits in each slot once, so an
      unbiased judge has ½ whatever the outputs' quality; above ½ leans to the second slot, below to the first.
    """

    n: int
    unparsed: int
    follows_position: float
    consistent: float
    slot_b_rate: float


def position_bias(pairs: Iterable[tuple[Judgment, Judgment]]) -> PositionBias:
    """Position bias over (judgment with the model shown first, judgment with the model shown second) pairs."""
    n = unparsed = follows = consistent = 0
    slot_b_total = 0.0
    for model_as_a, model_as_b in pairs:
        first, second = slot_b_score(model_as_a), slot_b_score(model_as_b)
        if first is None or second is None:
            unparsed += 1
            continue
        n += 1
        slot_b_total += first + second
        side_1, side_2 = _side(first), _side(second)
        if side_1 == side_2 != "tie":
            follows += 1
        elif _side(1.0 - first) == side_2:  # the output in slot A of order 1 sits in slot B of order 2
            consistent += 1
    if n == 0:
        return PositionBias(0, unparsed, math.nan, math.nan, math.nan)
    return PositionBias(n, unparsed, follows / n, consistent / n, slot_b_total / (2 * n))
