"""Figures of evaluation results, as matplotlib Figures (no pyplot global state, so safe in any thread)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline_lib.reporting import metrics as m

# The held-out metrics plotted by round, with their legend labels.
PLOTTED = ((m.EVAL_SCORE, "mean score"), (m.EVAL_PASS_RATE, "pass rate"))


def new_figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    """A figure of ``panels`` axes side by side; matplotlib is imported only when a figure is drawn."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def plot_by_round(axes: Any, lines: Mapping[str, Mapping[int, float]], title: str, ylim: tuple[float, float] | None = (0, 1)) -> None:
    """One line per label of a 0-to-1 metric against the round, each round a tick."""
    for label, values in lines.items():
        steps = sorted(values)
        if steps:
            axes.plot(steps, [values[s] for s in steps], marker="o", label=label)
    axes.set_title(title)
    axes.set_xticks(sorted({step for values in lines.values() for step in values}))
    axes.set_xlabel("round")
    if ylim:
        axes.set_ylim(*ylim)


def family_figure(metrics: dict[str, Any], title: str):
    """Bar chart of mean score and pass rate per family."""
    families = list(metrics["families"])
    scores = [metrics["families"][f]["mean_score"] for f in families]
    passes = [metrics["families"][f]["pass_rate"] for f in families]
    figure, (axes,) = new_figure(8, 3.5)
    positions = range(len(families))
    axes.bar([p - 0.2 for p in positions], scores, width=0.4, label="mean score")
    axes.bar([p + 0.2 for p in positions], passes, width=0.4, label="pass rate")
    axes.set_xticks(list(positions), families, rotation=20)
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend()
    return figure


def rounds_figure(rounds: dict[int, dict[str, float]], title: str):
    """Held-out mean score and pass rate by round (round 0 is the base model)."""
    figure, (axes,) = new_figure(5, 3.5)
    lines = {label: {i: r[key] for i, r in rounds.items() if key in r} for key, label in PLOTTED}
    plot_by_round(axes, lines, title)
    axes.legend()
    return figure


def benchmark_figures(rounds: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """One figure per benchmark by round, named by its metric prefix: MT-Bench's score (1-10), a pairwise
    entry's win rate and LC win rate, lm-eval's task metrics."""
    by_prefix: dict[str, dict[str, dict[int, float]]] = {}
    for k, metrics in rounds.items():
        for name, value in metrics.items():
            prefix, _, rest = name.partition("/")
            if m.is_headline(name):
                by_prefix.setdefault(prefix, {}).setdefault(rest, {})[k] = value
    figures = {}
    for prefix, lines in sorted(by_prefix.items()):
        figure, (axes,) = new_figure(5, 3.5)
        plot_by_round(axes, lines, f"{prefix} by round", ylim=(1, 10) if prefix == m.MT_BENCH else (0, 1))
        axes.legend()
        figures[prefix] = figure
    return figures


def histogram(values: list[int], title: str, unit: str):
    """How many rows have each length, in 30 bins."""
    figure, (axes,) = new_figure(5, 3.5)
    axes.hist(values, bins=30)
    axes.set_title(title)
    axes.set_xlabel(unit)
    axes.set_ylabel("rows")
    return figure
