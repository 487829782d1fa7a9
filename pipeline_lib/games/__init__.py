"""Seeded text grid games for CEL (METHODS.md §6): Frozen Lake, Sokoban, Minesweeper.

Every game renders as text with a classic or an abstract symbol set, takes
free-text actions (an illegal one is a no-op that still costs a step), gives
reward 1 only on the winning step, and generates levels that a solver has
proved winnable. ``solver_action`` is that solver as a policy.
"""

from __future__ import annotations

from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.games.base import GridGame, StepResult
from pipeline_lib.games.frozen_lake import FrozenLake
from pipeline_lib.games.minesweeper import Minesweeper
from pipeline_lib.games.sokoban import Sokoban
from pipeline_lib.games.solvers import solver_action

_GAME_CLASSES: dict[str, type[GridGame]] = {cls.name: cls for cls in (FrozenLake, Sokoban, Minesweeper)}
GAMES: tuple[str, ...] = tuple(_GAME_CLASSES)


def make_env(game: str, *, symbols: str = "classic", max_steps: int | None = None, **knobs: Any) -> GridGame:
    """A new environment; call ``reset(seed)`` on it before stepping."""
    if game not in _GAME_CLASSES:
        raise UserError(f"unknown game {game!r}; choose one of {', '.join(GAMES)}")
    return _GAME_CLASSES[game](symbols=symbols, max_steps=max_steps, **knobs)


__all__ = ["GAMES", "GridGame", "StepResult", "make_env", "solver_action"]
