"""Search and deduction for the grid games, and the scripted solver policy.

Level generation and the solver policy use the same functions: a level is
kept only if the search here solves it, so ``solver_action`` always has a
winning move on a fresh level (deterministic games) — the property the
"solver policy" agent and the tests rely on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import combinations
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline_lib.games.base import GridGame

Cell = tuple[int, int]


def solver_action(env: GridGame) -> str:
    """The scripted solver's next action for the environment's current state."""
    if env.done:
        raise RuntimeError(f"{env.name}: the episode is over; there is no next action")
    return env._solver_action()


# -- Frozen Lake -----------------------------------------------------------------


def lake_distances(safe: set[Cell], goal: Cell) -> dict[Cell, int]:
    """Moves to the goal from every safe cell that can reach it (no slipping).

    Steps between safe neighbours are reversible, so one search from the goal
    answers for every start at once.
    """
    distance = {goal: 0}
    frontier = deque([goal])
    while frontier:
        row, col = frontier.popleft()
        for step in ((0, -1), (1, 0), (0, 1), (-1, 0)):
            near = (row + step[0], col + step[1])
            if near in safe and near not in distance:
                distance[near] = distance[(row, col)] + 1
                frontier.append(near)
    return distance


def lake_slippery_policy(
    cells: Iterable[Cell],
    terminal_value: dict[Cell, float],
    transitions: Callable[[Cell, int], list[tuple[float, Cell]]],
    discount: float = 0.999,
) -> dict[Cell, int]:
    """Value iteration on the slip model: the action most likely to reach the goal.

    The discount only breaks ties toward shorter routes; close to 1 it keeps
    the success probability the thing maximised.
    """
    open_cells = [cell for cell in cells if cell not in terminal_value]
    value = {cell: 0.0 for cell in open_cells} | terminal_value
    # Terminal landings count at face value; others are discounted.
    outcomes = {
        cell: [
            [(probability * (1.0 if landing in terminal_value else discount), landing)
             for probability, landing in transitions(cell, action)]
            for action in range(4)
        ]
        for cell in open_cells
    }

    def action_value(cell: Cell, action: int) -> float:
        return sum(weight * value[landing] for weight, landing in outcomes[cell][action])

    for _ in range(100_000):
        change = 0.0
        for cell in open_cells:
            best = max(action_value(cell, action) for action in range(4))
            change = max(change, abs(best - value[cell]))
            value[cell] = best
        if change < 1e-9:
            break
    return {cell: max(range(4), key=lambda action: (action_value(cell, action), -action)) for cell in open_cells}


# -- Sokoban ----------------------------------------------------------------------
# Positions are flat indices row * width + col, so a move is one addition.


def sokoban_dead_squares(floor: set[int], targets: set[int], width: int) -> set[int]:
    """Floor cells from which a lone box can never be pushed onto any target.

    Found backwards: a box could have reached ``cell`` from ``cell - d`` only
    if the player had room at ``cell - 2d`` to push it.
    """
    live = set(targets)
    frontier = deque(targets)
    while frontier:
        cell = frontier.popleft()
        for delta in (-width, width, -1, 1):
            before, pusher = cell - delta, cell - 2 * delta
            if before in floor and pusher in floor and before not in live:
                live.add(before)
                frontier.append(before)
    return floor - live


SOKOBAN_MOVES = ("up", "down", "left", "right")


def sokoban_solve(
    *,
    width: int,
    walls: frozenset[int],
    targets: frozenset[int],
    dead: set[int],
    player: int,
    boxes: Iterable[int],
    max_states: int,
) -> list[str] | None:
    """Fewest-moves solution by breadth-first search over (player, boxes), or None.

    None also when the search visits more than ``max_states`` states, which is
    what keeps level generation fast.
    """
    deltas = dict(zip(SOKOBAN_MOVES, (-width, width, -1, 1)))
    start = (player, tuple(sorted(boxes)))
    came_from: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, tuple[int, ...]], str] | None] = {start: None}
    frontier = deque([start])
    while frontier:
        state = frontier.popleft()
        where, boxes_now = state
        if targets.issuperset(boxes_now):
            moves: list[str] = []
            while came_from[state] is not None:
                state, move = came_from[state]
                moves.append(move)
            return moves[::-1]
        for move, delta in deltas.items():
            ahead = where + delta
            if ahead in walls:
                continue
            if ahead in boxes_now:
                pushed_to = ahead + delta
                if pushed_to in walls or pushed_to in boxes_now or pushed_to in dead:
                    continue
                next_boxes = tuple(sorted(pushed_to if box == ahead else box for box in boxes_now))
            else:
                next_boxes = boxes_now
            following = (ahead, next_boxes)
            if following not in came_from:
                came_from[following] = (state, move)
                if len(came_from) > max_states:
                    return None
                frontier.append(following)
    return None


# -- Minesweeper ------------------------------------------------------------------


def neighbours(cell: Cell, rows: int, cols: int) -> list[Cell]:
    row, col = cell
    return [
        (r, c)
        for r in range(max(row - 1, 0), min(row + 2, rows))
        for c in range(max(col - 1, 0), min(col + 2, cols))
        if (r, c) != cell
    ]


def minesweeper_deduce(rows: int, cols: int, shown: dict[Cell, int]) -> tuple[set[Cell], set[Cell]]:
    """Hidden cells provably safe and provably mines, from the revealed numbers.

    Two rules, repeated until nothing new follows: a number whose unknown
    neighbours must all be mines (or none), and the subset rule — if one
    number's unknown cells contain another's, the difference holds exactly
    the difference of their remaining mine counts.
    """
    safe: set[Cell] = set()
    mines: set[Cell] = set()
    while True:
        constraints: set[tuple[frozenset[Cell], int]] = set()
        for cell, number in shown.items():
            around = [near for near in neighbours(cell, rows, cols) if near not in shown and near not in safe]
            unknown = frozenset(near for near in around if near not in mines)
            if unknown:
                constraints.add((unknown, number - (len(around) - len(unknown))))
        found_safe: set[Cell] = set()
        found_mines: set[Cell] = set()
        for unknown, remaining in constraints:
            if remaining == 0:
                found_safe |= unknown
            elif remaining == len(unknown):
                found_mines |= unknown
        for (small, small_count), (large, large_count) in combinations(constraints, 2):
            if small > large:
                small, small_count, large, large_count = large, large_count, small, small_count
            if small < large:
                rest, rest_count = large - small, large_count - small_count
                if rest_count == 0:
                    found_safe |= rest
                elif rest_count == len(rest):
                    found_mines |= rest
        if found_safe <= safe and found_mines <= mines:
            return safe, mines
        safe |= found_safe
        mines |= found_mines
