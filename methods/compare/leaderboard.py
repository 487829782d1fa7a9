"""compare-methods' leaderboards: a row per contestant and the markdown table, one board per kind of method.

Suite methods are ranked by their held-out score against the shared start;
game-playing methods (CEL) by their held-out success rate, each row beside
its own zero-shot play (round 0), since each contestant may play another
game. A comparison's contestants all go on one board (``methods._compare_check``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_lib.benchmarks.bootstrap import describe_interval
from pipeline_lib.reporting import metrics as m
from pipeline_lib.reporting.tables import Rounds, render_markdown
from pipeline_lib.store import read_manifest


def wall_seconds(variant_root: Path) -> float:
    """Compute time of a variant: its stages' build times (reused ones count what they cost when built),
    without round 0, which evaluates the shared starting model."""
    total = 0.0
    for group in variant_root.iterdir():
        if not group.is_dir() or group.name == "round-0":
            continue
        for stage in group.iterdir():
            manifest = read_manifest(stage.resolve()) or {}
            total += float(manifest.get("seconds", 0.0))
    return round(total, 1)


def train_tokens(variant_root: Path) -> int:
    """Tokens the policy was trained on, over all rounds."""
    total = 0
    for policy in variant_root.glob("round-*/train-policy"):
        total += int(((read_manifest(policy.resolve()) or {}).get("train") or {}).get("trained_tokens") or 0)
    return total


def leaderboard_row(label: str, final: dict[str, float], variant_root: Path) -> dict[str, Any]:
    return {
        "method": label,
        "score": round(final[m.EVAL_SCORE], 4),
        "pass_rate": round(final[m.EVAL_PASS_RATE], 4),
        "length": round(final[m.EVAL_LENGTH], 1),
        # Against the start (every contestant's round 0 is the same model on the same prompts).
        "score_delta": final.get(m.EVAL_SCORE_DELTA),
        "score_delta_low": final.get(m.EVAL_SCORE_DELTA_LOW),
        "score_delta_high": final.get(m.EVAL_SCORE_DELTA_HIGH),
        "wall_s": wall_seconds(variant_root),
        "train_tokens": train_tokens(variant_root),
        # eval.benchmarks' main numbers, each with its change from the start when it has one.
        "benchmarks": {name: final[name] for name in m.headlines(final)},
        "benchmark_deltas": {name: delta for name in m.headlines(final) if (delta := _delta(final, name))},
    }


def _delta(final: dict[str, float], name: str) -> list[float] | None:
    """A benchmark's change from the start, with its interval: of MT-Bench's score, of a pairwise win rate."""
    prefix = name.split("/")[0]
    if name.endswith("lc_win_rate") or f"{prefix}/delta" not in final:
        return None
    return [final[f"{prefix}/delta{end}"] for end in ("", "_low", "_high")]


def leaderboard_markdown(rows: list[dict[str, Any]], start: dict[str, float]) -> str:
    """The leaderboard, best held-out score first, with the starting model as the first line."""
    first = [f"{start[m.EVAL_SCORE]:.3f}", f"{start[m.EVAL_PASS_RATE]:.3f}", f"{start[m.EVAL_LENGTH]:.1f}"]
    benchmarks = sorted({name for row in rows for name in row.get("benchmarks", {})})
    table = [
        ["method", "held-out score", "against start (95 % CI)", "pass rate", "length (tokens)", "wall time (s)",
         "training tokens", *benchmarks],
        ["*start*", first[0], "–", *first[1:], "–", "–", *(_number(start.get(name)) for name in benchmarks)],
    ]  # fmt: skip
    for row in sorted(rows, key=lambda r: -r["score"]):
        bounds = (row["score_delta"], row["score_delta_low"], row["score_delta_high"])
        against_start = describe_interval(*bounds) if None not in bounds else "–"
        table.append([
            row["method"], f"{row['score']:.3f}", against_start, f"{row['pass_rate']:.3f}",
            f"{row['length']:.1f}", f"{row['wall_s']:.0f}", str(row["train_tokens"]),
            *(_benchmark_cell(row, name) for name in benchmarks),
        ])  # fmt: skip
    return render_markdown(table, right=range(1, 7 + len(benchmarks)))


def _number(value: float | None, form: str = "{:.3f}") -> str:
    return "–" if value is None else form.format(value)


def _benchmark_cell(row: dict[str, Any], name: str) -> str:
    """The benchmark's number, and its change from the start with the paired interval (win rates and scores)."""
    value = _number(row.get("benchmarks", {}).get(name))
    delta = row.get("benchmark_deltas", {}).get(name)
    return f"{value} ({describe_interval(*delta)})" if delta else value


def games_row(label: str, rounds: Rounds, variant_root: Path) -> dict[str, Any]:
    """A CEL contestant: held-out play after learning (its last round) beside its zero-shot play (round 0)."""
    final = rounds[max(rounds)]
    row = {
        "method": label,
        "success_rate": final[m.EVAL_SUCCESS_RATE],
        "zero_shot_success_rate": rounds.get(0, {}).get(m.EVAL_SUCCESS_RATE),  # none with cel.baseline: false
        "learn_success_rate": rounds.get(1, {}).get(m.LEARN_SUCCESS_RATE),
        "invalid_rate": final.get(m.EVAL_INVALID_RATE),
        "world_model_accuracy": final.get(m.EVAL_WORLD_MODEL_ACCURACY),
        "mean_steps": final.get(m.EVAL_MEAN_STEPS),
        "wall_s": wall_seconds(variant_root),
    }
    # World-model accuracy is NaN when the agent never predicted the step it took: no number, not NaN.
    return {name: None if isinstance(value, float) and math.isnan(value) else value for name, value in row.items()}


def games_markdown(rows: list[dict[str, Any]], start: dict[str, float] | None = None) -> str:
    """The games leaderboard, best held-out success first; each contestant's zero-shot play is its own."""
    table = [["method", "held-out success", "zero-shot success", "learning success", "invalid actions",
              "world-model accuracy", "mean steps", "wall time (s)"]]  # fmt: skip
    for row in sorted(rows, key=lambda r: -r["success_rate"]):
        table.append([
            row["method"], *(_number(row[name]) for name in ("success_rate", "zero_shot_success_rate",
            "learn_success_rate", "invalid_rate", "world_model_accuracy")),
            _number(row["mean_steps"], "{:.1f}"), f"{row['wall_s']:.0f}",
        ])  # fmt: skip
    return render_markdown(table, right=range(1, 8))


@dataclass(frozen=True)
class Board:
    """How one kind of contestant is ranked: its row from its rounds, the table, the row's numbers logged to MLflow."""

    row: Callable[[str, Rounds, Path], dict[str, Any]]
    markdown: Callable[[list[dict[str, Any]], dict[str, float]], str]
    logged: tuple[str, ...]


BOARDS = {
    "suite": Board(
        lambda label, rounds, root: leaderboard_row(label, rounds[max(rounds)], root),
        leaderboard_markdown,
        ("score", "score_delta", "score_delta_low", "score_delta_high", "pass_rate", "length", "wall_s"),
    ),
    "games": Board(
        games_row, games_markdown,
        ("success_rate", "zero_shot_success_rate", "learn_success_rate", "invalid_rate", "world_model_accuracy", "wall_s"),
    ),
}
