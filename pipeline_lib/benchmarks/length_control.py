"""Length-controlled win rate in the manner of AlpacaEval 2.0.

LLM judges prefer longer answers, so a raw win rate rewards verbosity. The
length-controlled (LC) win rate asks what the preference would be if the
model's and the baseline's outputs had the same length: fit a GLM that
explains each judged preference by a quality term plus a length term, then
predict with the length difference set to zero.

What AlpacaEval 2.0 fits (``length_controlled_v1``, read from its
``alpaca_eval/metrics/glm_winrate.py``), for item i:

    logit P(model preferred) = theta + phi * tanh(d_i / sd(d)) + gamma * difficulty_i

* ``theta`` is the model-vs-baseline term (a constant feature, no separate
  intercept); ``d_i`` is the difference in output length in **characters**
  (Python ``len`` of the two strings), divided by its standard deviation over
  the items but not centred, so a zero difference stays zero; tanh bounds the
  pull of a few very long outputs.
* ``difficulty_i`` is a per-instruction difficulty estimated once from many
  models' leaderboard annotations and downloaded from the Hugging Face Hub.
* It is fitted with scikit-learn's L1 logistic regression (liblinear, no
  intercept), the strength chosen by 5-fold cross-validation grouped by item;
  soft preferences are fitted as two copies of each item, labelled 1 and 0 and
  weighted p and 1 - p, which is the cross-entropy against p.
* It also fits, alongside the model's rows, precomputed annotations of two
  "gamed" versions of the baseline (prompted to be verbose or concise), each
  row weighted 0.1, with the model term off: they anchor the length and
  difficulty coefficients so that one model's data cannot explain its own
  wins away as length.
* LC win rate = mean over items of sigmoid(theta + gamma * difficulty_i), the
  prediction at zero length difference, times 100.

What this module fits, and why it differs:

    logit P(model preferred) = theta + beta * tanh(d_i / sd(d))

* No difficulty term and no gamed-baseline rows: both come from files
  precomputed by AlpacaEval for its own 805 instructions and its own judge,
  which are not available offline and would not apply to other prompt sets or
  judges anyway. Without the difficulty term the prediction at zero length
  difference is the same for every item, so ``lc_win_rate = sigmoid(theta)``:
  the model term alone.
* ``d_i = model length - baseline length``: AlpacaEval subtracts the other way
  round, which only flips the sign of ``beta``; here ``beta > 0`` means the
  judge favours the longer output. ``sd`` uses ddof=1, as pandas does there.
* Lengths are whatever the caller passes; characters match AlpacaEval.
* Fitted with ``scipy.optimize.minimize`` (trust-exact Newton with the
  analytic gradient and Hessian) on the cross-entropy against the soft
  preference, plus a fixed, positive L2 penalty
  ``l2 / 2 * (theta^2 + beta^2)`` on the summed loss. The default ``l2 = 0.01`` is the same strength as scikit-learn's
  ``C = 100``, the C AlpacaEval uses when it does not cross-validate; L2 rather
  than L1 keeps the objective smooth, and with two coefficients there is
  nothing to select. Its only job is to keep the fit finite when the
  preferences are perfectly separable by length; on hundreds of items its bias
  is negligible.

Degenerate inputs give a defined result, named in ``fit``, rather than a crash:

* ``"constant_preferences"``: every preference equal (all wins, all losses,
  all ties). Nothing separates quality from length, so no correction:
  ``lc_win_rate = win_rate``, ``theta = logit(win_rate)`` (infinite at 0 or
  1), ``beta = 0``.
* ``"no_length_variance"``: fewer than two items, or the length difference is
  the same on every item. A constant length gap cannot be told apart from a
  quality gap, so again ``lc_win_rate = win_rate``, ``beta = 0``.

Items with a missing (None/NaN) preference or length are dropped; ``n`` counts
the items used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from pipeline_lib.benchmarks.bootstrap import as_scores

DEFAULT_L2 = 0.01

GLM = "glm"
CONSTANT_PREFERENCES = "constant_preferences"
NO_LENGTH_VARIANCE = "no_length_variance"


@dataclass(frozen=True)
class LengthControlledWinRate:
    """Raw and length-controlled win rates of a model against a baseline, as fractions in [0, 1].

    ``model_coef`` (theta) and ``length_coef`` (beta) are the fitted GLM
    coefficients; ``length_scale`` is sd(d) used to standardise the length
    difference (0 when it could not be used); ``fit`` says which path produced
    the numbers (see the module docstring).
    """

    win_rate: float
    lc_win_rate: float
    model_coef: float
    length_coef: float
    length_scale: float
    n: int
    mean_model_length: float
    mean_baseline_length: float
    fit: str


def length_controlled_win_rate(
    preferences: Sequence[float | None] | np.ndarray,
    model_lengths: Sequence[float | None] | np.ndarray,
    baseline_lengths: Sequence[float | None] | np.ndarray,
    *,
    l2: float = DEFAULT_L2,
) -> LengthControlledWinRate:
    """Fit ``logit p = theta + beta * tanh(d / sd(d))`` and return ``sigmoid(theta)`` as the LC win rate.

    ``preferences[i]`` is in [0, 1]: 1 the model's output preferred, 0 the
    baseline's, 0.5 a tie, anything between a soft (e.g. log-probability
    weighted) judgment. Lengths are of the two outputs for the same item.
    """
    p = as_scores(preferences, "preferences")
    m = as_scores(model_lengths, "model_lengths")
    b = as_scores(baseline_lengths, "baseline_lengths")
    if not (p.size == m.size == b.size):
        raise ValueError(
            f"preferences, model_lengths and baseline_lengths need equal lengths, got {p.size}, {m.size}, {b.size}"
        )
    if p.size == 0:
        raise ValueError("length_controlled_win_rate needs at least one judged item, got none")
    if not (math.isfinite(l2) and l2 > 0):
        # Without a penalty the maximum-likelihood fit does not exist on separable data.
        raise ValueError(f"l2 must be a finite number > 0, got {l2}")
    keep = ~(np.isnan(p) | np.isnan(m) | np.isnan(b))
    p, m, b = p[keep], m[keep], b[keep]
    if p.size == 0:
        raise ValueError("no complete items: every item lacks a preference or a length")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("preferences must lie in [0, 1] (1 = model preferred, 0.5 = tie)")
    if ((m < 0) | (b < 0)).any():
        raise ValueError("lengths must be >= 0")

    win_rate = float(p.mean())
    common = dict(n=int(p.size), mean_model_length=float(m.mean()), mean_baseline_length=float(b.mean()))
    delta = m - b
    scale = float(delta.std(ddof=1)) if p.size >= 2 else 0.0

    if np.all(p == p[0]):
        return LengthControlledWinRate(
            win_rate=win_rate, lc_win_rate=win_rate, model_coef=_logit(win_rate), length_coef=0.0,
            length_scale=scale, fit=CONSTANT_PREFERENCES, **common,
        )  # fmt: skip
    # Relative test: a spread of rounding noise on huge equal gaps is still "no variance".
    if scale <= 1e-12 * max(1.0, float(np.abs(delta).max())):
        return LengthControlledWinRate(
            win_rate=win_rate, lc_win_rate=win_rate, model_coef=_logit(win_rate), length_coef=0.0,
            length_scale=0.0, fit=NO_LENGTH_VARIANCE, **common,
        )  # fmt: skip

    features = np.column_stack([np.ones_like(p), np.tanh(delta / scale)])
    theta, beta = _fit_soft_logistic(features, p, l2)
    return LengthControlledWinRate(
        win_rate=win_rate, lc_win_rate=float(expit(theta)), model_coef=theta, length_coef=beta,
        length_scale=scale, fit=GLM, **common,
    )  # fmt: skip


def _logit(q: float) -> float:
    if q <= 0.0:
        return -math.inf
    if q >= 1.0:
        return math.inf
    return math.log(q / (1.0 - q))


def _fit_soft_logistic(x: np.ndarray, p: np.ndarray, l2: float) -> tuple[float, float]:
    """Minimise the summed cross-entropy against soft labels ``p``, plus ``l2 / 2 * |w|^2``.

    This is the objective AlpacaEval reaches by duplicating rows with weights
    p and 1 - p, written directly. With l2 > 0 it is strictly convex with a
    finite minimum, so Newton steps from zero converge in a handful of iterations.
    """
    # Optimised per item (divided by n) so that tolerances do not depend on n; same minimum.
    n = x.shape[0]

    def loss(w: np.ndarray) -> float:
        z = x @ w
        return float(-(p * log_expit(z) + (1 - p) * log_expit(-z)).sum() / n + 0.5 * l2 * (w @ w) / n)

    def grad(w: np.ndarray) -> np.ndarray:
        return (x.T @ (expit(x @ w) - p) + l2 * w) / n

    def hess(w: np.ndarray) -> np.ndarray:
        s = expit(x @ w)
        return ((x * (s * (1 - s))[:, None]).T @ x + l2 * np.eye(x.shape[1])) / n

    result = minimize(loss, np.zeros(x.shape[1]), jac=grad, hess=hess, method="trust-exact", options={"gtol": 1e-10})
    # trust-exact can stop at the optimum with "failure to predict improvement" once the
    # loss stops changing in floating point; the gradient, not its flag, says whether it is there.
    if not np.all(np.isfinite(result.x)) or np.abs(grad(result.x)).max() > 1e-7:
        raise RuntimeError(f"length-control GLM did not converge: {result.message}")
    theta, beta = (float(v) for v in result.x)
    return theta, beta
