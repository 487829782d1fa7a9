"""Bootstrap intervals and the length-controlled win rate, on data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from pipeline_lib.benchmarks.bootstrap import BootstrapInterval, bootstrap_mean, paired_bootstrap
from pipeline_lib.benchmarks.length_control import (
    CONSTANT_PREFERENCES,
    GLM,
    NO_LENGTH_VARIANCE,
    length_controlled_win_rate,
)

# --- bootstrap ---------------------------------------------------------------------------------


def test_large_constant_shift_is_not_within_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.2, size=100)
    ci = paired_bootstrap(base + 0.3, base, resamples=2000)
    assert ci.estimate == pytest.approx(0.3)
    # Every pair differs by exactly 0.3, so every resample does too.
    assert ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)
    assert not ci.within_noise
    assert ci.n == 100 and ci.resamples == 2000 and ci.confidence == 0.95
    assert "within noise" not in ci.describe()


def test_identical_lists_give_zero_width_interval_at_zero_within_noise():
    scores = [0.1, 0.9, 0.4, 0.7, 0.3]
    ci = paired_bootstrap(scores, list(scores), resamples=500)
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert ci.within_noise
    assert ci.describe() == "+0.000 [+0.000, +0.000] within noise"


def test_small_difference_under_heavy_noise_is_within_noise():
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.2, size=60)
    noisy = base + 0.01 + rng.normal(0, 0.3, size=60)
    ci = paired_bootstrap(noisy, base, resamples=2000)
    assert ci.low < 0 < ci.high
    assert ci.within_noise
    assert ci.describe().endswith("within noise")


def test_pairing_detects_a_shift_that_independent_spread_would_hide():
    # Items differ hugely in difficulty; each improves by 0.05 give or take 0.01.
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 10, size=50)
    ci = paired_bootstrap(base + rng.normal(0.05, 0.01, size=50), base, resamples=2000)
    assert 0 < ci.low < 0.05 < ci.high < 0.1


def test_seeded_determinism():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=40), rng.normal(size=40)
    first = paired_bootstrap(a, b, resamples=1000, seed=7)
    assert paired_bootstrap(a, b, resamples=1000, seed=7) == first
    assert paired_bootstrap(a, b, resamples=1000, seed=8) != first


def test_coverage_is_near_nominal():
    # True difference 0.2; the 95 % interval should contain it about 95 % of the time
    # (the percentile bootstrap runs a little under nominal at n=40).
    rng = np.random.default_rng(5)
    hits = 0
    repetitions = 200
    for rep in range(repetitions):
        base = rng.normal(0.0, 1.0, size=40)
        treated = base + 0.2 + rng.normal(0.0, 0.5, size=40)
        ci = paired_bootstrap(treated, base, resamples=1000, seed=rep)
        hits += ci.low <= 0.2 <= ci.high
    assert 0.88 <= hits / repetitions <= 0.99


def test_wider_confidence_gives_wider_interval():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=30), rng.normal(size=30)
    narrow = paired_bootstrap(a, b, resamples=2000, confidence=0.5)
    wide = paired_bootstrap(a, b, resamples=2000, confidence=0.99)
    assert wide.low < narrow.low <= narrow.high < wide.high


def test_missing_items_drop_whole_pairs_and_n_reports_it():
    ci = paired_bootstrap([1.0, None, 3.0, float("nan"), 5.0], [0.0, 1.0, None, 2.0, 4.0], resamples=200)
    assert ci.n == 2  # pairs 0 and 4 are the only complete ones
    assert ci.estimate == pytest.approx(1.0)


def test_one_usable_item_is_always_within_noise():
    ci = paired_bootstrap([5.0, None], [1.0, 2.0], resamples=100)
    assert ci.n == 1 and ci.estimate == 4.0
    assert (ci.low, ci.high) == (-math.inf, math.inf)
    assert ci.within_noise


@pytest.mark.parametrize(
    ("scores", "baseline", "kwargs", "message"),
    [
        ([1.0, 2.0], [1.0], {}, "equal lengths"),
        ([], [], {}, "at least one"),
        ([None, 1.0], [1.0, None], {}, "no complete pairs"),
        ([1.0, 2.0], [1.0, 2.0], {"resamples": 0}, "resamples"),
        ([1.0, 2.0], [1.0, 2.0], {"resamples": 1.5}, "resamples"),
        ([1.0, 2.0], [1.0, 2.0], {"confidence": 1.0}, "confidence"),
        ([1.0, 2.0], [1.0, 2.0], {"confidence": 0.0}, "confidence"),
        ([1.0, math.inf], [1.0, 2.0], {}, "infinite"),
        (["a", "b"], [1.0, 2.0], {}, "numbers"),
    ],
)
def test_paired_bootstrap_rejects_bad_input(scores, baseline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(scores, baseline, **kwargs)


def test_win_rate_interval_against_a_coin_flip():
    rng = np.random.default_rng(9)
    strong = bootstrap_mean(rng.binomial(1, 0.8, size=200), null=0.5, resamples=2000)
    assert strong.low > 0.5 and not strong.within_noise
    assert strong.difference == pytest.approx(strong.estimate - 0.5)
    even = bootstrap_mean([1, 0, 0.5, 1, 0, 0.5, 1, 0], null=0.5, resamples=2000)
    assert even.estimate == 0.5 and even.within_noise
    assert even.describe() == f"0.500 [{even.low:.3f}, {even.high:.3f}] within noise of 0.5"


def test_bootstrap_mean_validates():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="missing"):
        bootstrap_mean([None, float("nan")])
    with pytest.raises(ValueError, match="null"):
        bootstrap_mean([1.0, 2.0], null=math.nan)


def test_interval_is_frozen():
    ci = BootstrapInterval(estimate=0.1, low=-0.1, high=0.3, n=10, resamples=100, confidence=0.95)
    with pytest.raises(AttributeError):
        ci.low = 0.0  # type: ignore[misc]


# --- length-controlled win rate ----------------------------------------------------------------


def _synthetic(rng: np.random.Generator, n: int, theta: float, beta: float, model_longer_by: float = 0.0):
    """Lengths in characters, and the GLM's own preference probability for each item."""
    baseline = rng.integers(200, 2000, size=n).astype(float)
    model = np.clip(baseline + rng.normal(model_longer_by, 400, size=n), 1, None)
    delta = model - baseline
    prob = expit(theta + beta * np.tanh(delta / delta.std(ddof=1)))
    return prob, model, baseline


def test_glm_recovers_parameters_from_soft_preferences():
    # Soft preferences equal to the model's own probabilities: the fit should return the
    # generating coefficients up to the (tiny) L2 shrinkage.
    prob, model, baseline = _synthetic(np.random.default_rng(10), 4000, theta=0.4, beta=-0.8)
    result = length_controlled_win_rate(prob, model, baseline)
    assert result.fit == GLM and result.n == 4000
    assert result.model_coef == pytest.approx(0.4, abs=1e-3)
    assert result.length_coef == pytest.approx(-0.8, abs=1e-3)
    assert result.lc_win_rate == pytest.approx(expit(0.4), abs=1e-3)


def test_glm_recovers_parameters_from_sampled_verdicts_with_ties():
    # Hard verdicts drawn from the model, 10 % turned into ties (0.5, which leave the expected
    # preference unchanged). Standard errors at n=4000 are about 0.035 and 0.06, so 0.15 is ~3-4 SE.
    rng = np.random.default_rng(11)
    prob, model, baseline = _synthetic(rng, 4000, theta=-0.3, beta=1.2)
    verdicts = rng.binomial(1, prob).astype(float)
    verdicts[rng.random(4000) < 0.1] = 0.5
    result = length_controlled_win_rate(verdicts, model, baseline)
    assert result.model_coef == pytest.approx(-0.3, abs=0.15)
    assert result.length_coef == pytest.approx(1.2, abs=0.15)


def test_without_length_effect_lc_matches_raw_win_rate():
    rng = np.random.default_rng(12)
    prob, model, baseline = _synthetic(rng, 4000, theta=0.6, beta=0.0, model_longer_by=300)
    verdicts = rng.binomial(1, prob).astype(float)
    result = length_controlled_win_rate(verdicts, model, baseline)
    assert abs(result.length_coef) < 0.15
    assert result.lc_win_rate == pytest.approx(result.win_rate, abs=0.02)


def test_length_bias_toward_longer_model_outputs_lowers_lc_win_rate():
    # Equal quality (theta 0) but a judge that strongly favours length, and a model that is
    # usually longer: the raw win rate is inflated, the LC rate returns to about one half.
    rng = np.random.default_rng(13)
    prob, model, baseline = _synthetic(rng, 2000, theta=0.0, beta=2.0, model_longer_by=400)
    verdicts = rng.binomial(1, prob).astype(float)
    result = length_controlled_win_rate(verdicts, model, baseline)
    assert result.win_rate > 0.65
    assert result.lc_win_rate < result.win_rate - 0.1
    assert result.lc_win_rate == pytest.approx(0.5, abs=0.06)
    assert result.mean_model_length > result.mean_baseline_length


def test_swapping_model_and_baseline_mirrors_the_result():
    rng = np.random.default_rng(14)
    prob, model, baseline = _synthetic(rng, 500, theta=0.3, beta=0.7)
    verdicts = rng.binomial(1, prob).astype(float)
    forward = length_controlled_win_rate(verdicts, model, baseline)
    backward = length_controlled_win_rate(1 - verdicts, baseline, model)
    assert backward.lc_win_rate == pytest.approx(1 - forward.lc_win_rate, abs=1e-6)
    assert backward.length_coef == pytest.approx(forward.length_coef, abs=1e-6)


@pytest.mark.parametrize(("value", "coef"), [(1.0, math.inf), (0.0, -math.inf), (0.5, 0.0)])
def test_constant_preferences_give_no_correction(value, coef):
    result = length_controlled_win_rate([value] * 6, [100, 900, 50, 400, 30, 700], [300] * 6)
    assert result.fit == CONSTANT_PREFERENCES
    assert result.win_rate == result.lc_win_rate == value
    assert result.model_coef == coef and result.length_coef == 0.0


def test_zero_length_variance_gives_no_correction():
    prefs = [1, 0, 1, 1, 0.5, 0]
    same_gap = length_controlled_win_rate(prefs, [150, 250, 350, 450, 550, 650], [100, 200, 300, 400, 500, 600])
    equal = length_controlled_win_rate(prefs, [100] * 6, [100] * 6)
    for result in (same_gap, equal):
        assert result.fit == NO_LENGTH_VARIANCE
        assert result.lc_win_rate == result.win_rate == pytest.approx(3.5 / 6)
        assert result.length_coef == 0.0
        assert result.model_coef == pytest.approx(math.log(3.5 / 2.5))
    single = length_controlled_win_rate([0.7], [10], [20])
    assert single.fit == CONSTANT_PREFERENCES and single.lc_win_rate == 0.7


def test_preferences_perfectly_separated_by_length_stay_finite():
    # The model wins exactly when it is longer: the unpenalised fit would run off to infinity.
    model = [100, 500, 120, 800, 90, 600]
    baseline = [300] * 6
    result = length_controlled_win_rate([0, 1, 0, 1, 0, 1], model, baseline)
    assert result.fit == GLM
    assert math.isfinite(result.model_coef) and math.isfinite(result.length_coef)
    assert result.length_coef > 0 and 0 < result.lc_win_rate < 1


def test_missing_items_are_dropped():
    result = length_controlled_win_rate(
        [1, None, 0, 1, float("nan"), 0.5], [10, 20, 30, None, 50, 60], [15, 25, 35, 45, 55, 65]
    )
    assert result.n == 3
    assert result.win_rate == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("prefs", "model", "baseline", "kwargs", "message"),
    [
        ([1, 0], [1, 2, 3], [1, 2], {}, "equal lengths"),
        ([], [], [], {}, "at least one"),
        ([None], [1], [1], {}, "no complete items"),
        ([1.5, 0], [1, 2], [1, 2], {}, r"\[0, 1\]"),
        ([1, 0], [-1, 2], [1, 2], {}, ">= 0"),
        ([1, 0], [1, 2], [1, 2], {"l2": -1.0}, "l2"),
        ([1, 0], [1, 2], [1, 2], {"l2": 0.0}, "l2"),
        ([1, 0], [1, math.inf], [1, 2], {}, "infinite"),
    ],
)
def test_length_control_rejects_bad_input(prefs, model, baseline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        length_controlled_win_rate(prefs, model, baseline, **kwargs)
