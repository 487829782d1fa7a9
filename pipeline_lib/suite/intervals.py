"""How far a round's held-out score is from round 0's, and whether that is more than noise.

The held-out prompts are the same in every round (and for every contestant of a
comparison), so rounds are compared prompt by prompt: a paired bootstrap over
the prompts' mean scores (pipeline_lib.benchmarks.bootstrap).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline_lib.benchmarks.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    BootstrapInterval,
    describe_interval,
    paired_bootstrap,
)
from pipeline_lib.reporting import metrics as m
from pipeline_lib.suite.config import IntervalConfig
from pipeline_lib.suite.scoring import SCORES_FILE


def prompt_scores(scores_dir: str | Path) -> dict[str, float]:
    """Each prompt's mean verifier score in a score stage's output."""
    totals: dict[str, list[float]] = {}
    for row in pq.read_table(Path(scores_dir) / SCORES_FILE, columns=["prompt_id", "score"]).to_pylist():
        totals.setdefault(row["prompt_id"], []).append(row["score"])
    return {prompt: sum(scores) / len(scores) for prompt, scores in totals.items()}


def score_interval(
    scores_dir: str | Path, baseline_dir: str | Path, settings: IntervalConfig | None, seed: int
) -> BootstrapInterval:
    """The mean score difference over the prompts both outputs scored, with its paired bootstrap interval."""
    # Unset: the defaults, without a settings object the recipe does not hold.
    resamples, confidence = (settings.resamples, settings.confidence) if settings else (DEFAULT_RESAMPLES, DEFAULT_CONFIDENCE)
    scores, baseline = prompt_scores(scores_dir), prompt_scores(baseline_dir)
    shared = sorted(set(scores) & set(baseline))
    return paired_bootstrap(
        [scores[p] for p in shared], [baseline[p] for p in shared], resamples=resamples, confidence=confidence, seed=seed
    )


def interval_metrics(interval: BootstrapInterval) -> dict[str, float]:
    return {m.EVAL_SCORE_DELTA: interval.difference, m.EVAL_SCORE_DELTA_LOW: interval.low, m.EVAL_SCORE_DELTA_HIGH: interval.high}


def describe_delta(metrics: dict[str, float]) -> str | None:
    """``+0.021 [-0.010, +0.052] within noise`` from a round's logged metrics; None without them."""
    if metrics.get(m.EVAL_SCORE_DELTA) is None:
        return None
    return describe_interval(*(metrics[k] for k in (m.EVAL_SCORE_DELTA, m.EVAL_SCORE_DELTA_LOW, m.EVAL_SCORE_DELTA_HIGH)))
