"""Tables for the console and for Prefect's artifacts: a run's per-round metrics, a suite evaluation by family.

Every table goes through ``render_text`` or ``render_markdown``, so alignment
rules live in one place.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any

from pipeline_lib.reporting import metrics as m

# (column, metric, format). A column appears when some round has its metric
# and reads "-" in rounds without it: suite runs have the eval/ scores, rounds
# that train add SEFT's decisions and the loss, CEL rounds their game metrics.
COLUMNS = [
    ("score", m.EVAL_SCORE, "{:.3f}"),
    ("pass", m.EVAL_PASS_RATE, "{:.3f}"),
    ("length", m.EVAL_LENGTH, "{:.1f}"),
    ("mtbench", m.MT_BENCH_SCORE, "{:.2f}"),
    ("win", m.PAIRWISE_WIN_RATE, "{:.3f}"),
    ("lc win", m.PAIRWISE_LC_WIN_RATE, "{:.3f}"),
    ("none", m.REVISE_NONE, "{:.0f}"),
    ("minor", m.REVISE_MINOR, "{:.0f}"),
    ("major", m.REVISE_MAJOR, "{:.0f}"),
    ("bad", m.REVISE_MALFORMED, "{:.0f}"),
    ("kept", m.SELECT_ACCEPTED, "{:.0f}"),
    ("loss", m.TRAIN_LOSS, "{:.3f}"),
    ("success", m.EVAL_SUCCESS_RATE, "{:.3f}"),
    ("steps", m.EVAL_MEAN_STEPS, "{:.1f}"),
    ("invalid", m.EVAL_INVALID_RATE, "{:.3f}"),
    ("wm acc", m.EVAL_WORLD_MODEL_ACCURACY, "{:.3f}"),
    ("learned", m.LEARN_SUCCESS_RATE, "{:.3f}"),
]
Rounds = Mapping[int, Mapping[str, float]]
Rows = Sequence[Sequence[str]]


def render_text(
    rows: Rows, right: Container[int] = frozenset(), widths: Sequence[int] | None = None, gap: str = "  "
) -> str:
    """Plain-text columns, the header being the first row; columns in ``right`` right-aligned.

    ``widths`` fixes each column's width (a longer cell overflows it), so that
    a table keeps its layout from one run to the next; without it a column is
    as wide as its longest cell.
    """
    widths = widths or [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = (
        gap.join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    )
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: Rows, right: Container[int] = frozenset()) -> str:
    """A markdown table, the header being the first row; columns in ``right`` right-aligned."""
    header, *body = rows
    rule = "|" + "".join("---:|" if i in right else "---|" for i in range(len(header)))
    lines = ["| " + " | ".join(row) + " |" for row in (header, *body)]
    return "\n".join([lines[0], rule, *lines[1:]]) + "\n"


def _round_rows(rounds: Rounds) -> list[list[str]]:
    """Header and formatted rows, one row per round in order."""
    columns = [c for c in COLUMNS if any(metrics.get(c[1]) is not None for metrics in rounds.values())]
    rows = [
        [str(index)] + [fmt.format(metrics[key]) if metrics.get(key) is not None else "-" for _, key, fmt in columns]
        for index, metrics in sorted(rounds.items())
    ]
    return [["round"] + [name for name, _, _ in columns], *rows]


def text_table(rounds: Rounds) -> str:
    rows = _round_rows(rounds)
    return render_text(rows, right=range(1, len(rows[0])), widths=[7] + [8] * (len(rows[0]) - 1), gap="")


def markdown_table(rounds: Rounds) -> str:
    rows = _round_rows(rounds)
    return render_markdown(rows, right=range(1, len(rows[0])))


def table_records(rounds: Rounds) -> list[dict[str, float | int]]:
    """One record per round with every metric it has, unformatted (Prefect's table artifact)."""
    return [{"round": index, **dict(sorted(metrics.items()))} for index, metrics in sorted(rounds.items())]


def family_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the per-family scores for the console."""
    rows = [["family", "n", "score", "pass"]]
    for family, stats in metrics["families"].items():
        rows.append([family, str(stats["count"]), f"{stats['mean_score']:.3f}", f"{stats['pass_rate']:.3f}"])
    rows.append(["overall", str(metrics["n"]), f"{metrics['score']:.3f}", f"{metrics['pass_rate']:.3f}"])
    table = render_text(rows, right={1, 2, 3}, widths=[18, 5, 8, 8], gap="")
    return f"{table}\nmean response length: {metrics['length']:.1f} tokens"
