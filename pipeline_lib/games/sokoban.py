"""Sokoban: push every box onto a target in a small walled room.

Levels are random rooms (inner walls, targets, boxes, player) kept only when
a breadth-first search proves them solvable within a state cap and a move
limit, so generation stays fast and every level has a known solution.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from itertools import permutations

from pipeline_lib.core.errors import UserError
from pipeline_lib.games.base import GridGame, Knob, Outcome, render_grid
from pipeline_lib.games.solvers import SOKOBAN_MOVES, sokoban_dead_squares, sokoban_solve

# Generation gives up on a candidate level past this many search states; the
# solver policy, which must finish what a player started, may search further.
_GENERATION_STATES = 4_000
_POLICY_STATES = 200_000


class Sokoban(GridGame):
    name = "sokoban"
    KNOBS = {
        "width": Knob(5, 3, 8),  # interior, without the outer wall
        "height": Knob(5, 3, 8),
        "boxes": Knob(1, 1, 2),
        "wall_fraction": Knob(0.1, 0.0, 0.3),  # share of interior cells made walls
        "min_pushes": Knob(2, 1, 6),  # at least this many pushes are needed (box-target distance)
    }
    SYMBOLS = {
        "classic": {"wall": "#", "floor": "_", "target": ".", "box": "$", "box_on_target": "*",
                    "player": "@", "player_on_target": "+"},
        "abstract": {"wall": "K", "floor": "R", "target": "M", "box": "W", "box_on_target": "Q",
                     "player": "T", "player_on_target": "V"},
    }
    SYMBOL_MEANINGS = {
        "wall": "a wall",
        "floor": "empty floor",
        "target": "an empty target",
        "box": "a box not on a target",
        "box_on_target": "a box on a target",
        "player": "you, the player",
        "player_on_target": "you, standing on a target",
    }

    def _default_max_steps(self) -> int:
        # Twice the longest solution generation accepts (see _generate).
        return 2 * self._move_limit()

    def _move_limit(self) -> int:
        return self.knobs["width"] * self.knobs["height"] * self.knobs["boxes"]

    def _check_knob_combination(self) -> None:
        interior = self.knobs["width"] * self.knobs["height"]
        walls = round(self.knobs["wall_fraction"] * interior)
        if interior - walls < 2 * self.knobs["boxes"] + 2:
            raise UserError("sokoban knobs leave too little floor for the boxes; make the room larger")
        # Farther than this, a box that must stay off the walls' dead squares
        # rarely has a target; generation would search for a long time.
        farthest = self.knobs["width"] + self.knobs["height"] - 4
        if self.knobs["min_pushes"] > farthest:
            raise UserError(
                f"sokoban knob 'min_pushes' must be at most {farthest} in a "
                f"{self.knobs['width']}x{self.knobs['height']} room, got {self.knobs['min_pushes']}"
            )

    # -- level -------------------------------------------------------------

    def _generate(self, rng: random.Random, seed: int) -> None:
        self.grid_width = self.knobs["width"] + 2
        grid_height = self.knobs["height"] + 2
        interior = [r * self.grid_width + c for r in range(1, grid_height - 1) for c in range(1, self.grid_width - 1)]
        border = {r * self.grid_width + c for r in range(grid_height) for c in range(self.grid_width)} - set(interior)
        inner_wall_count = round(self.knobs["wall_fraction"] * len(interior))
        for _ in range(20_000):
            inner_walls = set(rng.sample(interior, inner_wall_count))
            floor = [cell for cell in interior if cell not in inner_walls]
            if not self._connected(set(floor)):
                continue
            targets = rng.sample(floor, self.knobs["boxes"])
            dead = sokoban_dead_squares(set(floor), set(targets), self.grid_width)
            box_spots = [cell for cell in floor if cell not in targets and cell not in dead]
            if len(box_spots) < self.knobs["boxes"]:
                continue
            boxes = rng.sample(box_spots, self.knobs["boxes"])
            player = rng.choice([cell for cell in floor if cell not in boxes])
            if self._push_lower_bound(boxes, targets) < self.knobs["min_pushes"]:
                continue
            walls = frozenset(border | inner_walls)
            solution = sokoban_solve(width=self.grid_width, walls=walls, targets=frozenset(targets), dead=dead,
                                     player=player, boxes=boxes, max_states=_GENERATION_STATES)
            if solution is not None and len(solution) <= self._move_limit():
                break
        else:  # the knob ranges make this unreachable in practice
            raise RuntimeError(f"sokoban: no solvable level found for seed {seed}")
        self._set_level(self.grid_width, grid_height, walls, targets, boxes, player)
        self.generated_solution = solution

    def _set_level(self, grid_width: int, grid_height: int, walls: frozenset[int], targets: Iterable[int],
                   boxes: Iterable[int], player: int) -> None:
        """Install a level; cells are flat indices row * grid_width + col, outer wall included."""
        boxes = frozenset(boxes)
        self.grid_width, self.grid_height = grid_width, grid_height
        self.walls, self.targets = walls, frozenset(targets)
        floor = {cell for cell in range(grid_width * grid_height) if cell not in walls}
        self.dead = sokoban_dead_squares(floor, set(self.targets), grid_width)
        self.boxes, self.player = set(boxes), player
        self.start_boxes, self.start_player = boxes, player
        # state -> next move along a solution, filled from one search at a time
        self._plan: dict[tuple[int, frozenset[int]], str] = {}

    def _connected(self, floor: set[int]) -> bool:
        first = next(iter(floor))
        seen, frontier = {first}, deque([first])
        while frontier:
            cell = frontier.popleft()
            for delta in (-self.grid_width, self.grid_width, -1, 1):
                if cell + delta in floor and cell + delta not in seen:
                    seen.add(cell + delta)
                    frontier.append(cell + delta)
        return len(seen) == len(floor)

    def _push_lower_bound(self, boxes: list[int], targets: list[int]) -> int:
        """Each push moves one box one cell, so the cheapest box-target matching bounds the pushes."""
        def distance(a: int, b: int) -> int:
            return abs(a // self.grid_width - b // self.grid_width) + abs(a % self.grid_width - b % self.grid_width)
        return min(sum(distance(b, t) for b, t in zip(boxes, order)) for order in permutations(targets))

    def _layout_signature(self) -> str:
        return (f"{self.grid_width}x{self.grid_height}|walls={sorted(self.walls)}|targets={sorted(self.targets)}"
                f"|boxes={sorted(self.start_boxes)}|player={self.start_player}")

    # -- dynamics ----------------------------------------------------------

    def _delta(self, move: str) -> int:
        return {"up": -self.grid_width, "down": self.grid_width, "left": -1, "right": 1}[move]

    def _apply(self, command: str) -> Outcome:
        delta = self._delta(command)
        ahead = self.player + delta
        if ahead in self.walls:
            return Outcome("You bumped into the wall; nothing moved.")
        if ahead not in self.boxes:
            self.player = ahead
            return Outcome(f"You moved {command}.")
        beyond = ahead + delta
        if beyond in self.walls or beyond in self.boxes:
            blocker = "a wall" if beyond in self.walls else "another box"
            return Outcome(f"The box cannot move {command}: {blocker} is behind it; nothing moved.")
        self.boxes.remove(ahead)
        self.boxes.add(beyond)
        self.player = ahead
        where = "onto a target" if beyond in self.targets else command
        if self.boxes <= self.targets:
            return Outcome(f"You pushed the box {where}. Every box is on a target. You win!", won=True)
        return Outcome(f"You pushed the box {where}.")

    def _solver_action(self) -> str:
        state = (self.player, frozenset(self.boxes))
        if state not in self._plan:
            moves = sokoban_solve(width=self.grid_width, walls=self.walls, targets=self.targets, dead=self.dead,
                                  player=self.player, boxes=self.boxes, max_states=_POLICY_STATES)
            if not moves:  # a box is stuck for good: no action can win, any legal one will do
                return SOKOBAN_MOVES[0]
            player, boxes = self.player, set(self.boxes)
            for move in moves:
                self._plan[(player, frozenset(boxes))] = move
                player += self._delta(move)
                if player in boxes:
                    boxes.remove(player)
                    boxes.add(player + self._delta(move))
        return self._plan[state]

    # -- text --------------------------------------------------------------

    def legal_actions(self) -> list[str]:
        return list(SOKOBAN_MOVES)

    def render(self) -> str:
        self._require_level()
        g = self.glyph
        rows = []
        for r in range(self.grid_height):
            row = []
            for c in range(self.grid_width):
                cell = r * self.grid_width + c
                on_target = cell in self.targets
                if cell in self.walls:
                    row.append(g["wall"])
                elif cell in self.boxes:
                    row.append(g["box_on_target" if on_target else "box"])
                elif cell == self.player:
                    row.append(g["player_on_target" if on_target else "player"])
                else:
                    row.append(g["target" if on_target else "floor"])
            rows.append(row)
        return render_grid(rows)

    def action_help(self) -> str:
        return "Actions: up, down, left, right."

    def oracle_rules(self) -> str:
        g = self.glyph
        return (
            f"The board is a walled room seen from above; row 0 is the top. Each action moves you "
            f"({g['player']}) one cell up, down, left or right. Walls ({g['wall']}) block you: walking into one "
            f"changes nothing. Walking into a box ({g['box']} or {g['box_on_target']}) pushes it one cell in the "
            f"same direction and you follow into its old cell, but only if the cell beyond the box is free floor "
            f"or a target; a box with a wall or another box behind it does not move, and neither do you. Boxes "
            f"cannot be pulled, so a box pushed into a corner or against a wall may be stuck for good. You win, "
            f"with reward 1, on the step that puts every box on a target ({g['target']}); every other step gives "
            f"reward 0. There is no other way to lose, but the game ends, lost, when the step budget of "
            f"{self.max_steps} steps is used up; invalid actions change nothing but count as steps. "
            f"{self.legend()}"
        )
