"""Reading the model's answers back, strictly: a fixed format or nothing.

The format is the interface the agent learns through, so a near miss
("move left", a missing END marker) is an error the episode records and the
reflection can see, never silently repaired.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# Read the way the games read an action, so that whatever a game would accept the parser
# accepts too, and an answer recorded as invalid is always a no-op in the game.
from pipeline_lib.games.base import normalize_action as normalise_action

VALUES: tuple[str, ...] = ("High", "Medium", "Low")
_VALUE_RANK = {v: rank for rank, v in enumerate(reversed(VALUES))}  # Low 0, Medium 1, High 2
MAX_PREDICTIONS = 2
NO_ACTION_LINE = "no ACTION line"

_ACTION_LINE = re.compile(r"^[ \t]*action[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_VALUE_LINE = re.compile(r"^[ \t]*value[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_PREDICT_LINE = re.compile(r"^[ \t]*predict[ \t]+(.+?)[ \t]*:(.*)$", re.IGNORECASE)
_NEXT_LINE = re.compile(r"^[ \t]*next[ \t]*:(.*)$", re.IGNORECASE)
# Any line that starts another part of the answer ends the grid before it.
_LABEL_LINE = re.compile(r"^[ \t]*(value[ \t]*:|action[ \t]*:|next[ \t]*:|predict[ \t]+\S)", re.IGNORECASE)


@dataclass(frozen=True)
class Decision:
    """A parsed decision; ``action`` is a legal action or None, and then ``error`` says why."""

    value: str | None
    predictions: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    error: str | None = None
    raw_action: str = ""  # the text after the last ACTION: label, as written ("" when there is none)


def grid_lines(grid: str) -> list[str]:
    """A grid as comparable lines: whitespace runs collapsed per line, blank lines dropped."""
    return [" ".join(line.split()) for line in grid.splitlines() if line.strip()]


def grids_match(predicted: str, actual: str) -> bool:
    return grid_lines(predicted) == grid_lines(actual)


def value_rank(value: str | None) -> int:
    """High > Medium > Low; no value ranks with Low."""
    return _VALUE_RANK.get(value or "Low", 0)


def parse_value(text: str) -> str | None:
    """The value on the last ``VALUE:`` line (High, Medium or Low), or None."""
    matches = _VALUE_LINE.findall(text)
    if not matches:
        return None
    word = normalise_action(matches[-1])
    return next((v for v in VALUES if v.lower() == word), None)


def _grid_after(first: str, following: Sequence[str]) -> str | None:
    """Grid lines: ``first`` (text on the label's own line) and the lines after it, up to a blank or label line."""
    lines = [first.rstrip()] if first.strip() else []
    for line in following:
        if _LABEL_LINE.match(line) or (not line.strip() and lines):
            break
        if line.strip():
            lines.append(line.rstrip())
    return "\n".join(lines) if lines else None


def parse_predictions(text: str) -> dict[str, str]:
    """``PREDICT <action>:`` blocks, the first ``MAX_PREDICTIONS`` with a grid, keyed by normalised action."""
    lines = text.splitlines()
    predictions: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = _PREDICT_LINE.match(line)
        if match is None or len(predictions) >= MAX_PREDICTIONS:
            continue
        action = normalise_action(match.group(1))
        grid = _grid_after(match.group(2), lines[index + 1 :])
        if action and grid is not None and action not in predictions:
            predictions[action] = grid
    return predictions


def parse_next_grid(text: str) -> str | None:
    """The world model's answer: the grid after the first ``NEXT:`` label, or None."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _NEXT_LINE.match(line)
        if match is not None:
            return _grid_after(match.group(1), lines[index + 1 :])
    return None


def parse_decision(text: str, legal_actions: Sequence[str]) -> Decision:
    """Value, predictions and the action of the last ``ACTION:`` line, which must be legal exactly."""
    value, predictions = parse_value(text), parse_predictions(text)
    labelled = _ACTION_LINE.findall(text)
    if not labelled:
        return Decision(value, predictions, None, NO_ACTION_LINE)
    raw = labelled[-1].strip()
    action = normalise_action(raw)
    if not action:
        return Decision(value, predictions, None, "empty ACTION line", raw)
    legal = {normalise_action(a) for a in legal_actions}
    if action not in legal:
        return Decision(value, predictions, None, f"not a legal action {raw!r}", raw)
    return Decision(value, predictions, action, None, raw)


def _block(text: str, name: str) -> str | None:
    """The content of the last ``NAME:`` ... ``END NAME`` block, or None."""
    pattern = re.compile(
        rf"^[ \t]*{name}[ \t]*:[ \t]*(.*?)^[ \t]*end[ \t]+{name}[ \t]*$", re.IGNORECASE | re.MULTILINE | re.DOTALL
    )
    found = pattern.findall(text)
    return found[-1].strip() if found else None


def parse_reflection(text: str, rules: bool = True, playbook: bool = True) -> tuple[str, str] | None:
    """(rules, playbook) from a reflection; every requested block must be present, closed and non-empty.

    A block not requested (``rules=False`` or ``playbook=False``) is returned as "".
    A block that only repeats the format's placeholder "..." counts as empty.
    """
    parts = []
    for name, wanted in (("rules", rules), ("playbook", playbook)):
        content = _block(text, name) if wanted else ""
        if wanted and (not content or content.strip(". \n") == ""):
            return None
        parts.append(content or "")
    return parts[0], parts[1]
