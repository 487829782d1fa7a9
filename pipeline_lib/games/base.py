"""The interface every text grid game implements, and what they share.

A game owns one level at a time: ``reset(seed)`` generates it from the seed
alone (never from ``max_steps`` or the symbol set, so a seed names the same
layout under every budget and rendering), and ``step(action)`` applies one
action given as free text. Subclasses supply the level generator, the rules
and the rendering; this class supplies action parsing, the step budget,
knob validation and the episode bookkeeping, so the three games cannot drift
apart on those.
"""

from __future__ import annotations

import hashlib
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline_lib.core.errors import UserError


@dataclass(frozen=True)
class StepResult:
    observation: str
    reward: float
    done: bool
    success: bool
    feedback: str
    valid: bool
    steps: int


@dataclass(frozen=True)
class Knob:
    """One level-generation setting: its default and the accepted range."""

    default: int | float | bool
    minimum: int | float | None = None
    maximum: int | float | None = None


@dataclass(frozen=True)
class Outcome:
    """What a legal action did, as a game's ``_apply`` reports it."""

    feedback: str
    won: bool = False
    lost: bool = False


# Models wrap actions in quotes or end them with a full stop; neither should
# cost a step. Commas and brackets let "reveal(1, 2)" read as "reveal 1 2".
_EDGE_PUNCTUATION = " \t\r\n\"'`.,;:!?"
_SEPARATORS = re.compile(r"[,()\[\]]")


def normalize_action(action: object) -> str:
    text = _SEPARATORS.sub(" ", str(action).lower())
    return " ".join(text.strip(_EDGE_PUNCTUATION).split())


def render_grid(cells: list[list[str]]) -> str:
    return "\n".join(" ".join(row) for row in cells)


class GridGame(ABC):
    """A seeded, text-rendered grid game with a sparse 1/0 reward."""

    name: ClassVar[str]
    KNOBS: ClassVar[dict[str, Knob]]
    # symbol set name -> meaning -> one character
    SYMBOLS: ClassVar[dict[str, dict[str, str]]]
    SYMBOL_MEANINGS: ClassVar[dict[str, str]]

    def __init__(self, *, symbols: str = "classic", max_steps: int | None = None, **knobs: Any):
        if symbols not in self.SYMBOLS:
            raise UserError(
                f"unknown symbol set {symbols!r} for {self.name}; choose one of {', '.join(self.SYMBOLS)}"
            )
        self.symbols = symbols
        self.glyph = self.SYMBOLS[symbols]
        self.knobs = self._validated_knobs(knobs)
        self._check_knob_combination()
        default_budget = self._default_max_steps()
        if max_steps is None:
            max_steps = default_budget
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise UserError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.max_steps = max_steps
        self.steps = 0
        self.done = False
        self.success = False
        self._has_level = False

    # -- knobs ---------------------------------------------------------------

    def _validated_knobs(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.KNOBS))
        if unknown:
            raise UserError(
                f"unknown knob {unknown[0]!r} for {self.name}; its knobs are {', '.join(self.KNOBS)}"
            )
        values: dict[str, Any] = {}
        for name, knob in self.KNOBS.items():
            value = given.get(name, knob.default)
            values[name] = self._checked_knob(name, knob, value)
        return values

    def _checked_knob(self, name: str, knob: Knob, value: Any) -> Any:
        if isinstance(knob.default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{self.name} knob {name!r} must be true or false, got {value!r}")
            return value
        wanted = int if isinstance(knob.default, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "an integer" if wanted is int else "a number"
            raise UserError(f"{self.name} knob {name!r} must be {kind}, got {value!r}")
        if not knob.minimum <= value <= knob.maximum:
            raise UserError(
                f"{self.name} knob {name!r} must be between {knob.minimum} and {knob.maximum}, got {value!r}"
            )
        return value

    def _check_knob_combination(self) -> None:
        """Raise UserError for knob values that are fine alone but not together."""

    # -- episode -------------------------------------------------------------

    def reset(self, seed: int) -> str:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed must be an integer, got {seed!r}")
        self._generate(random.Random(seed), seed)
        self.steps = 0
        self.done = False
        self.success = False
        self._has_level = True
        return self.render()

    def step(self, action: str) -> StepResult:
        if not self._has_level:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        if self.done:
            raise RuntimeError(f"{self.name}: the episode is over; call reset(seed) to start a new one")
        command = normalize_action(action)
        if command in self.legal_actions():
            outcome = self._apply(command)
            valid = True
        else:
            outcome = Outcome(self._invalid_feedback(str(action), command))
            valid = False
        self.steps += 1
        feedback = outcome.feedback
        if outcome.won:
            self.done = self.success = True
        elif outcome.lost:
            self.done = True
        elif self.steps >= self.max_steps:
            self.done = True
            feedback += f" The step budget of {self.max_steps} steps is spent. Game over."
        return StepResult(
            observation=self.render(),
            reward=1.0 if outcome.won else 0.0,
            done=self.done,
            success=self.success,
            feedback=feedback,
            valid=valid,
            steps=self.steps,
        )

    def _invalid_feedback(self, raw: str, command: str) -> str:
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        reason = self._invalid_reason(command)
        because = f" ({reason})" if reason else ""
        return f"'{shown}' is not a legal action{because}. {self._legal_form()} Nothing happened."

    def _invalid_reason(self, command: str) -> str | None:
        """Why a well-formed but illegal command is refused, or None."""
        return None

    def _legal_form(self) -> str:
        return f"Legal actions: {', '.join(self.legal_actions())}."

    def layout_key(self) -> str:
        """A short hash of the generated level, the same under every symbol set."""
        self._require_level()
        text = f"{self.name}|{self._layout_signature()}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def legend(self) -> str:
        parts = [f"{self.glyph[meaning]} = {text}" for meaning, text in self.SYMBOL_MEANINGS.items()]
        return "Symbols: " + "; ".join(parts) + "."

    def _require_level(self) -> None:
        if not self._has_level:
            raise RuntimeError(f"{self.name}: call reset(seed) first")

    # -- what each game supplies ---------------------------------------------

    @abstractmethod
    def _default_max_steps(self) -> int: ...

    @abstractmethod
    def _generate(self, rng: random.Random, seed: int) -> None:
        """Build a solvable, not yet solved level from ``rng`` and put the player at the start."""

    @abstractmethod
    def _apply(self, command: str) -> Outcome:
        """Apply a legal, normalized command."""

    @abstractmethod
    def _layout_signature(self) -> str: ...

    @abstractmethod
    def _solver_action(self) -> str:
        """The scripted solver's next action for the current state."""

    @abstractmethod
    def legal_actions(self) -> list[str]: ...

    @abstractmethod
    def render(self) -> str: ...

    @abstractmethod
    def action_help(self) -> str: ...

    @abstractmethod
    def oracle_rules(self) -> str: ...
