"""Seeded percentile-bootstrap confidence intervals for benchmark scores.

Two questions come up wherever alignflow prints a number:

* did round K beat round 0 on the same prompts? -> :func:`paired_bootstrap`,
  an interval for the mean of per-item differences. Pairing matters: item
  difficulty varies far more than the effect of one round, and resampling the
  two lists independently would bury a real difference under that spread.
* is a win rate against a baseline different from a coin flip? ->
  :func:`bootstrap_mean` with ``null=0.5``, an interval for the mean preference.

Both resample items with replacement (``resamples`` times, one index matrix per
chunk, so it is vectorised but memory stays bounded) and report the percentile
interval. The generator is seeded, so a rerun prints the same interval.

Missing items: ``None`` and NaN mark an item without a score (a judgment that
did not parse, an answer that was never generated). They are dropped before
resampling: from a paired comparison, every pair where either side is missing.
``n`` in the result is the number of items actually used, so a reader can see
how many were lost. Infinite scores are rejected, not dropped: they are bugs.

With a single usable item the bootstrap would return a zero-width interval and
call any difference significant; one item says nothing about noise, so the
interval is (-inf, inf) instead, which always reads "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
# Upper bound on index-matrix elements drawn at once (~32 MB of int64).
_CHUNK_ELEMENTS = 4_000_000

Scores = Sequence[float | None] | np.ndarray


@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate with its bootstrap interval.

    ``estimate`` is the statistic on the full data (the mean difference for a
    paired comparison, the mean for one sample); ``null`` is the value that
    means "no effect" (0 for a difference, 0.5 for a win rate).
    """

    estimate: float
    low: float
    high: float
    n: int
    resamples: int
    confidence: float
    null: float = 0.0

    @property
    def difference(self) -> float:
        """The estimate minus the null: the mean difference for a paired comparison."""
        return self.estimate - self.null

    @property
    def within_noise(self) -> bool:
        """True when the interval contains the null, i.e. the data cannot tell it from no effect."""
        return self.low <= self.null <= self.high

    def describe(self, digits: int = 3) -> str:
        """Short text such as ``+0.021 [-0.010, +0.052] within noise``.

        Differences (null 0) carry an explicit sign so that a drop is not misread
        as a gain; one-sample means such as win rates are printed unsigned with
        their null named, since "within noise" there means "not different from
        the null".
        """
        return describe_interval(self.estimate, self.low, self.high, self.null, digits)


def describe_interval(estimate: float, low: float, high: float, null: float = 0.0, digits: int = 3) -> str:
    """:meth:`BootstrapInterval.describe` for an interval known only by its numbers (read back from MLflow)."""
    signed = null == 0.0
    spec = f"{'+' if signed else ''}.{digits}f"
    text = f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"
    if low <= null <= high:
        text += " within noise" if signed else f" within noise of {null:g}"
    return text


def paired_bootstrap(
    scores: Scores,
    baseline: Scores,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | None = 0,
) -> BootstrapInterval:
    """Interval for ``mean(scores - baseline)`` over paired items.

    ``scores[i]`` and ``baseline[i]`` must be the same item (prompt, question)
    scored under the two conditions, e.g. round K and round 0. Pairs where
    either side is None/NaN are dropped; ``n`` counts the pairs kept.
    """
    a = as_scores(scores, "scores")
    b = as_scores(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair of scores, got none")
    keep = ~(np.isnan(a) | np.isnan(b))
    if not keep.any():
        raise ValueError(f"no complete pairs: every one of the {a.size} pairs has a missing score")
    return _interval(a[keep] - b[keep], resamples=resamples, confidence=confidence, seed=seed, null=0.0)


def bootstrap_mean(
    values: Scores,
    *,
    null: float = 0.0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | None = 0,
) -> BootstrapInterval:
    """Interval for the mean of one sample; pass ``null=0.5`` for a win rate against a baseline.

    None/NaN items are dropped; ``n`` counts the items kept.
    """
    x = as_scores(values, "values")
    if x.size == 0:
        raise ValueError("bootstrap_mean needs at least one value, got none")
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("no values: every one is missing")
    if not math.isfinite(null):
        raise ValueError(f"null must be finite, got {null}")
    return _interval(x, resamples=resamples, confidence=confidence, seed=seed, null=float(null))


def as_scores(values: Scores, name: str) -> np.ndarray:
    """A flat float array, None and NaN alike marking a missing item; infinities are errors."""
    # dtype=float turns None into NaN, so both spellings of "missing" agree.
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers or None: {exc}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence, got shape {array.shape}")
    if np.isinf(array).any():
        raise ValueError(f"{name} contains an infinite score")
    return array


def _interval(
    x: np.ndarray, *, resamples: int, confidence: float, seed: int | None, null: float
) -> BootstrapInterval:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = int(x.size)
    estimate = float(x.mean())
    if n == 1:
        low, high = -math.inf, math.inf
    else:
        means = _resampled_means(x, int(resamples), np.random.default_rng(seed))
        tail = (1.0 - confidence) / 2.0
        low, high = (float(q) for q in np.quantile(means, [tail, 1.0 - tail]))
    return BootstrapInterval(
        estimate=estimate, low=low, high=high, n=n, resamples=int(resamples), confidence=float(confidence), null=null
    )


def _resampled_means(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    # Chunk size depends only on n, so a given seed yields the same draws on any machine.
    rows = max(1, _CHUNK_ELEMENTS // x.size)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        index = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[index].mean(axis=1)
    return means
