"""Minesweeper: reveal every safe cell without revealing a mine.

The first reveal is made for the player at reset, on a cell whose whole
neighbourhood is mine-free, so it opens an area. Levels are kept only if
the deduction rules in ``solvers`` clear the board from there without a
guess: a careful player never has to gamble.
"""

from __future__ import annotations

import random
import re
from collections import deque

from pipeline_lib.core.errors import UserError
from pipeline_lib.games.base import GridGame, Knob, Outcome
from pipeline_lib.games.solvers import Cell, minesweeper_deduce, neighbours

_REVEAL = re.compile(r"reveal (-?\d+) (-?\d+)")


class Minesweeper(GridGame):
    name = "minesweeper"
    KNOBS = {
        "rows": Knob(5, 4, 10),
        "cols": Knob(5, 4, 10),
        "mines": Knob(4, 1, 25),
    }
    # Numbers are symbols too: the abstract set hides which count is which.
    SYMBOLS = {
        "classic": {"hidden": "?", "mine": "*", **{str(n): "." if n == 0 else str(n) for n in range(9)}},
        "abstract": {"hidden": "Z", "mine": "X", **dict(zip(map(str, range(9)), "KDRBTGMVJ"))},
    }
    SYMBOL_MEANINGS = {
        "hidden": "a hidden cell",
        "mine": "a mine (shown only when the game is over)",
        **{str(n): f"a revealed safe cell with {n} mine{'' if n == 1 else 's'} among its 8 neighbours"
           for n in range(9)},
    }

    def _default_max_steps(self) -> int:
        # Twice the cell count: one reveal per safe cell always suffices.
        return 2 * self.knobs["rows"] * self.knobs["cols"]

    def _check_knob_combination(self) -> None:
        rows, cols, mines = self.knobs["rows"], self.knobs["cols"], self.knobs["mines"]
        # Beyond a quarter of the cells, boards that deduction alone clears
        # become too rare to generate quickly.
        most = (rows * cols) // 4
        if mines > most:
            raise UserError(f"minesweeper knob 'mines' must be at most {most} on a {rows}x{cols} board, got {mines}")

    # -- level -------------------------------------------------------------

    def _generate(self, rng: random.Random, seed: int) -> None:
        rows, cols = self.knobs["rows"], self.knobs["cols"]
        cells = [(r, c) for r in range(rows) for c in range(cols)]
        for _ in range(50_000):
            start = rng.choice(cells)
            opening = {start, *neighbours(start, rows, cols)}
            mines = set(rng.sample([cell for cell in cells if cell not in opening], self.knobs["mines"]))
            self._lay(mines, start)
            if not self._won() and self._clearable_by_deduction():
                break
        else:  # the knob limits make this unreachable in practice
            raise RuntimeError(f"minesweeper: no level solvable without guessing found for seed {seed}")
        self._lay(mines, start)

    def _lay(self, mines: set[Cell], start: Cell) -> None:
        rows, cols = self.knobs["rows"], self.knobs["cols"]
        self.mines = frozenset(mines)
        self.start = start
        self.counts = {
            (r, c): sum(near in mines for near in neighbours((r, c), rows, cols))
            for r in range(rows) for c in range(cols) if (r, c) not in mines
        }
        self.revealed: set[Cell] = set()
        self.exploded: Cell | None = None
        self._open(start)

    def _open(self, cell: Cell) -> int:
        """Reveal a safe cell, spreading through zeros; returns how many cells opened."""
        before = len(self.revealed)
        frontier = deque([cell])
        self.revealed.add(cell)
        while frontier:
            current = frontier.popleft()
            if self.counts[current] == 0:
                for near in neighbours(current, self.knobs["rows"], self.knobs["cols"]):
                    if near not in self.revealed:
                        self.revealed.add(near)
                        frontier.append(near)
        return len(self.revealed) - before

    def _won(self) -> bool:
        return len(self.revealed) == len(self.counts)

    def _shown_numbers(self) -> dict[Cell, int]:
        return {cell: self.counts[cell] for cell in self.revealed}

    def _clearable_by_deduction(self) -> bool:
        while not self._won():
            safe, _ = minesweeper_deduce(self.knobs["rows"], self.knobs["cols"], self._shown_numbers())
            if not safe:
                return False
            for cell in safe:
                self._open(cell)
        return True

    def _layout_signature(self) -> str:
        return f"{self.knobs['rows']}x{self.knobs['cols']}|mines={sorted(self.mines)}|start={self.start}"

    # -- dynamics ----------------------------------------------------------

    def _apply(self, command: str) -> Outcome:
        row, col = map(int, _REVEAL.fullmatch(command).groups())
        if (row, col) in self.mines:
            self.exploded = (row, col)
            return Outcome(f"You revealed cell ({row}, {col}) and it hid a mine. Game over.", lost=True)
        opened = self._open((row, col))
        said = f"You revealed cell ({row}, {col}); {opened} cell{'' if opened == 1 else 's'} opened."
        if self._won():
            return Outcome(said + " Every safe cell is revealed. You win!", won=True)
        return Outcome(said)

    def _invalid_reason(self, command: str) -> str | None:
        match = _REVEAL.fullmatch(command)
        if not match:
            return None
        row, col = map(int, match.groups())
        rows, cols = self.knobs["rows"], self.knobs["cols"]
        if not (0 <= row < rows and 0 <= col < cols):
            return f"cell ({row}, {col}) is outside the board, which has rows 0-{rows - 1} and columns 0-{cols - 1}"
        return f"cell ({row}, {col}) is already revealed"

    def _legal_form(self) -> str:
        return "Legal form: reveal ROW COL, on a hidden cell, rows and columns counted from 0."

    def _solver_action(self) -> str:
        safe, _ = minesweeper_deduce(self.knobs["rows"], self.knobs["cols"], self._shown_numbers())
        # Generation guarantees a deducible safe cell on every board reachable
        # by safe reveals; the fallback only covers boards that cannot happen.
        row, col = min(safe) if safe else min(self._hidden())
        return f"reveal {row} {col}"

    # -- text --------------------------------------------------------------

    def _hidden(self) -> list[Cell]:
        return [(r, c) for r in range(self.knobs["rows"]) for c in range(self.knobs["cols"])
                if (r, c) not in self.revealed]

    def legal_actions(self) -> list[str]:
        return [f"reveal {r} {c}" for r, c in self._hidden()]

    def render(self) -> str:
        self._require_level()
        g = self.glyph
        lines = ["  " + " ".join(str(c) for c in range(self.knobs["cols"]))]
        for r in range(self.knobs["rows"]):
            row = []
            for c in range(self.knobs["cols"]):
                if (r, c) in self.revealed:
                    row.append(g[str(self.counts[(r, c)])])
                elif self.done and (r, c) in self.mines:
                    row.append(g["mine"])
                else:
                    row.append(g["hidden"])
            lines.append(f"{r} " + " ".join(row))
        return "\n".join(lines)

    def action_help(self) -> str:
        return "Actions: reveal ROW COL, rows and columns counted from 0."

    def oracle_rules(self) -> str:
        g = self.glyph
        rows, cols = self.knobs["rows"], self.knobs["cols"]
        return (
            f"The board is a grid of {rows} rows and {cols} columns; the first line numbers the columns and each "
            f"row starts with its row number, both counted from 0. {self.knobs['mines']} cells hide mines. Hidden "
            f"cells show {g['hidden']}. The action 'reveal ROW COL' uncovers a hidden cell. If it hides a mine, "
            f"the game is lost at once. Otherwise it shows how many of its up to 8 neighbours (including "
            f"diagonal ones) hide mines; a cell with no mine around it also uncovers all its neighbours, and "
            f"this spreads through every such empty cell. The first cell was uncovered for you and has no mine "
            f"around it. You win, with reward 1, on the step that uncovers the last safe cell; every other step "
            f"gives reward 0. Revealing a cell that is already uncovered or outside the board is invalid. The "
            f"game also ends, lost, when the step budget of {self.max_steps} steps is used up; invalid actions "
            f"change nothing but count as steps. When the game ends every mine is shown as {g['mine']}. "
            f"{self.legend()}"
        )
