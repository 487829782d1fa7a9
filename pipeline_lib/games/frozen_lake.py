"""Frozen Lake: walk from the start to the goal across ice without falling into a hole.

Dynamics follow gymnasium's ``FrozenLake-v1`` (actions 0 left, 1 down,
2 right, 3 up; walking into the edge leaves the player in place; slippery:
the intended move or either perpendicular one, each with probability 1/3).
The start is the top-left corner and the goal the bottom-right one.
"""

from __future__ import annotations

import random

from pipeline_lib.games.base import GridGame, Knob, Outcome, render_grid
from pipeline_lib.games.solvers import Cell, lake_distances, lake_slippery_policy

ACTIONS = ("left", "down", "right", "up")
_STEPS = ((0, -1), (1, 0), (0, 1), (-1, 0))
_TERRAIN_MEANING = {"S": "start", "F": "frozen", "H": "hole", "G": "goal"}


class FrozenLake(GridGame):
    name = "frozen_lake"
    KNOBS = {
        "size": Knob(4, 3, 10),
        # Share of the cells other than start and goal that are holes.
        "hole_fraction": Knob(0.2, 0.0, 0.4),
        "slippery": Knob(False),
    }
    SYMBOLS = {
        "classic": {"start": "S", "frozen": "F", "hole": "H", "goal": "G", "player": "P"},
        "abstract": {"start": "D", "frozen": "A", "hole": "B", "goal": "C", "player": "E"},
    }
    SYMBOL_MEANINGS = {
        "start": "the start cell (safe ice)",
        "frozen": "frozen ice (safe to stand on)",
        "hole": "a hole",
        "goal": "the goal",
        "player": "you, the player",
    }

    def _default_max_steps(self) -> int:
        # The shortest route never needs more moves than there are cells;
        # four times that leaves room for mistakes, and slipping needs twice
        # as much again for the detours that keep away from holes.
        return (8 if self.knobs["slippery"] else 4) * self.knobs["size"] ** 2

    # -- level -------------------------------------------------------------

    def _generate(self, rng: random.Random, seed: int) -> None:
        size = self.knobs["size"]
        start, goal = (0, 0), (size - 1, size - 1)
        others = [(r, c) for r in range(size) for c in range(size) if (r, c) not in (start, goal)]
        hole_count = round(self.knobs["hole_fraction"] * len(others))
        for _ in range(100_000):
            holes = set(rng.sample(others, hole_count))
            safe = {(r, c) for r in range(size) for c in range(size)} - holes
            if start in lake_distances(safe, goal):
                break
        else:  # the knob ranges make this unreachable in practice
            raise RuntimeError(f"frozen_lake: no solvable level found for seed {seed}")
        self._set_level(
            ["".join("S" if (r, c) == start else "G" if (r, c) == goal else "H" if (r, c) in holes else "F"
                     for c in range(size))
             for r in range(size)],
            seed,
        )

    def _set_level(self, desc: list[str], seed: int) -> None:
        """Install a level given as gymnasium-style rows of S, F, H and G."""
        self.terrain = [list(row) for row in desc]
        self.size = len(desc)
        cells = {(r, c): t for r, row in enumerate(desc) for c, t in enumerate(row)}
        self.start = next(cell for cell, t in cells.items() if t == "S")
        self.goal = next(cell for cell, t in cells.items() if t == "G")
        self.player = self.start
        # Slips draw from their own stream so the level never depends on them.
        self._slip_rng = random.Random(f"frozen_lake/slips/{seed}")
        self._distances = lake_distances({cell for cell, t in cells.items() if t != "H"}, self.goal)
        self._slippery_plan: dict[Cell, int] | None = None

    def desc(self) -> list[str]:
        """The level as gymnasium's ``desc`` rows (S, F, H, G), whatever the symbol set."""
        self._require_level()
        return ["".join(row) for row in self.terrain]

    def _layout_signature(self) -> str:
        return "/".join(self.desc())

    # -- dynamics ----------------------------------------------------------

    def _moved(self, cell: Cell, action: int) -> Cell:
        row, col = cell[0] + _STEPS[action][0], cell[1] + _STEPS[action][1]
        return (min(max(row, 0), self.size - 1), min(max(col, 0), self.size - 1))

    def _directions(self, action: int) -> tuple[int, ...]:
        """The directions an action may actually move in, equally likely."""
        if not self.knobs["slippery"]:
            return (action,)
        return ((action - 1) % 4, action, (action + 1) % 4)  # gymnasium's order: never backwards

    def transitions(self, cell: Cell, action: int | str) -> list[tuple[float, Cell]]:
        """Each possible (probability, landing cell) of ``action`` from ``cell``.

        Slippery lists the three directions separately, even where two land
        on the same cell, as gymnasium's transition table does.
        """
        directions = self._directions(ACTIONS.index(action) if isinstance(action, str) else action)
        return [(1 / len(directions), self._moved(cell, direction)) for direction in directions]

    def _apply(self, command: str) -> Outcome:
        intended = ACTIONS.index(command)
        directions = self._directions(intended)
        direction = directions[self._slip_rng.randrange(len(directions))] if len(directions) > 1 else intended
        landing = self._moved(self.player, direction)
        if direction == intended:
            moved = f"You moved {command}." if landing != self.player else ""
        else:
            moved = f"You tried to move {command} but slipped {ACTIONS[direction]}."
        if landing == self.player:
            moved = (moved + " You bumped into the edge of the lake; you stayed where you were.").strip()
        self.player = landing
        terrain = self.terrain[landing[0]][landing[1]]
        if terrain == "H":
            return Outcome(moved + " You fell into a hole. Game over.", lost=True)
        if terrain == "G":
            return Outcome(moved + " You reached the goal. You win!", won=True)
        return Outcome(moved)

    def _solver_action(self) -> str:
        if not self.knobs["slippery"]:
            here = self._distances[self.player]
            return next(
                name for index, name in enumerate(ACTIONS)
                if self._distances.get(self._moved(self.player, index)) == here - 1
            )
        if self._slippery_plan is None:
            cells = [(r, c) for r in range(self.size) for c in range(self.size)]
            terminal = {cell: float(self.terrain[cell[0]][cell[1]] == "G")
                        for cell in cells if self.terrain[cell[0]][cell[1]] in "HG"}
            self._slippery_plan = lake_slippery_policy(cells, terminal, self.transitions)
        return ACTIONS[self._slippery_plan[self.player]]

    # -- text --------------------------------------------------------------

    def legal_actions(self) -> list[str]:
        return list(ACTIONS)

    def render(self) -> str:
        self._require_level()
        cells = [[self.glyph[_TERRAIN_MEANING[t]] for t in row] for row in self.terrain]
        cells[self.player[0]][self.player[1]] = self.glyph["player"]
        return render_grid(cells)

    def action_help(self) -> str:
        return "Actions: left, down, right, up."

    def oracle_rules(self) -> str:
        g = self.glyph
        slip = (
            "The ice is slippery: each move goes in the chosen direction with probability 1/3 and in each of "
            "the two perpendicular directions with probability 1/3 (never backwards)."
            if self.knobs["slippery"]
            else "Moves are deterministic: you always move in the chosen direction."
        )
        return (
            f"The board is a square grid of cells seen from above; row 0 is the top. You ({g['player']}) start "
            f"on the start cell ({g['start']}) in the top-left corner. Each action moves you one cell left, "
            f"down, right or up. {slip} Moving into the edge of the board leaves you where you are and still "
            f"uses a step. Frozen ice ({g['frozen']}) and the start cell are safe. Stepping onto a hole "
            f"({g['hole']}) loses the game at once. Reaching the goal ({g['goal']}) wins the game, with reward "
            f"1; every other step gives reward 0. The game also ends, lost, when the step budget of "
            f"{self.max_steps} steps is used up; invalid actions change nothing but count as steps. Your cell "
            f"shows {g['player']} instead of what lies under it. {self.legend()}"
        )
