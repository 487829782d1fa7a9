"""A run's per-round metrics as one table: the console report, and Prefect's markdown and table artifacts."""

from __future__ import annotations

from collections.abc import Mapping

# (column, metric, format). A column appears when some round has its metric
# and reads "-" in rounds without it: suite runs have the eval/ scores, rounds
# that train add SEFT's decisions and the loss, CEL rounds their game metrics.
COLUMNS = [
    ("score", "eval/score", "{:.3f}"),
    ("pass", "eval/pass_rate", "{:.3f}"),
    ("length", "eval/length", "{:.1f}"),
    ("none", "revise/none", "{:.0f}"),
    ("minor", "revise/minor", "{:.0f}"),
    ("major", "revise/major", "{:.0f}"),
    ("bad", "revise/malformed", "{:.0f}"),
    ("kept", "select/accepted", "{:.0f}"),
    ("loss", "train/loss", "{:.3f}"),
    ("success", "eval/success_rate", "{:.3f}"),
    ("steps", "eval/mean_steps", "{:.1f}"),
    ("invalid", "eval/invalid_rate", "{:.3f}"),
    ("wm acc", "eval/world_model_accuracy", "{:.3f}"),
    ("learned", "learn/success_rate", "{:.3f}"),
]
Rounds = Mapping[int, Mapping[str, float]]


def round_table(rounds: Rounds) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows, one row per round in order."""
    columns = [c for c in COLUMNS if any(metrics.get(c[1]) is not None for metrics in rounds.values())]
    rows = [
        [str(index)] + [fmt.format(metrics[key]) if metrics.get(key) is not None else "-" for _, key, fmt in columns]
        for index, metrics in sorted(rounds.items())
    ]
    return ["round"] + [name for name, _, _ in columns], rows


def text_table(rounds: Rounds) -> str:
    header, rows = round_table(rounds)
    widths = [7] + [8] * (len(header) - 1)
    lines = [header] + rows
    return "\n".join(
        "".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    )


def markdown_table(rounds: Rounds) -> str:
    header, rows = round_table(rounds)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_records(rounds: Rounds) -> list[dict[str, float | int]]:
    """One record per round with every metric it has, unformatted (Prefect's table artifact)."""
    return [{"round": index, **dict(sorted(metrics.items()))} for index, metrics in sorted(rounds.items())]
