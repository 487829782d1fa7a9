"""The benchmark intervals a run prints: each win rate against parity, each benchmark's round K against round 0."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline_lib.benchmarks.bootstrap import describe_interval

Rounds = Mapping[int, Mapping[str, float]]


def benchmark_lines(rounds: Rounds) -> list[str]:
    """``pairwise win rate, round 1: 0.412 [0.301, 0.530] within noise of 0.5`` and the like, from logged metrics."""
    lines = []
    for k, metrics in sorted(rounds.items()):
        for name in sorted(n.removesuffix("/win_rate_low") for n in metrics if n.endswith("/win_rate_low")):
            low, high = metrics[f"{name}/win_rate_low"], metrics[f"{name}/win_rate_high"]
            lines.append(f"{name} win rate, round {k}: {describe_interval(metrics[f'{name}/win_rate'], low, high, null=0.5)}")
        for name in sorted(n.removesuffix("/delta") for n in metrics if n.endswith("/delta")):
            text = describe_interval(metrics[f"{name}/delta"], metrics[f"{name}/delta_low"], metrics[f"{name}/delta_high"])
            lines.append(f"{name}, round {k} against round 0: {text} (paired bootstrap over its items)")
    return lines
