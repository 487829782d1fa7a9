"""MLflow metric names, spelt once: the tables and plots that read a metric cannot drift from the stage that logs it.

A name is ``<prefix>/<name>``; a prefix says what was measured: the held-out
evaluation (``eval``), a CEL round's learning games (``learn``) and each of
them (``episode``), SEFT's reviser decisions (``revise``) and selection
(``select``), RFT's kept samples (``rft``), a training stage (``train``), the
reviser's own training (``reviser``), a comparison's final results
(``leaderboard``), and each entry of ``eval.benchmarks`` under its own name
(``mt_bench``, ``pairwise``, ``lm_eval``).
"""

EVAL = "eval"
LEARN = "learn"
EPISODE = "episode"
REVISE = "revise"
SELECT = "select"
RFT = "rft"
TRAIN = "train"
REVISER = "reviser"
LEADERBOARD = "leaderboard"
# eval.benchmarks: MT-Bench, a pairwise comparison (``pairwise_<label>`` when labelled), lm-eval's tasks.
MT_BENCH = "mt_bench"
PAIRWISE = "pairwise"
LM_EVAL = "lm_eval"

# The suite's held-out evaluation.
EVAL_SCORE = f"{EVAL}/score"
EVAL_PASS_RATE = f"{EVAL}/pass_rate"
EVAL_LENGTH = f"{EVAL}/length"
# A round's score minus round 0's on the same prompts, with its paired bootstrap interval.
EVAL_SCORE_DELTA = f"{EVAL}/score_delta"
EVAL_SCORE_DELTA_LOW = f"{EVAL}/score_delta_low"
EVAL_SCORE_DELTA_HIGH = f"{EVAL}/score_delta_high"
# CEL's games, held out and while learning.
EVAL_SUCCESS_RATE = f"{EVAL}/success_rate"
EVAL_MEAN_STEPS = f"{EVAL}/mean_steps"
EVAL_INVALID_RATE = f"{EVAL}/invalid_rate"
EVAL_WORLD_MODEL_ACCURACY = f"{EVAL}/world_model_accuracy"
LEARN_SUCCESS_RATE = f"{LEARN}/success_rate"
# SEFT's reviser decisions per round, and the targets kept.
REVISE_NONE = f"{REVISE}/none"
REVISE_MINOR = f"{REVISE}/minor"
REVISE_MAJOR = f"{REVISE}/major"
REVISE_MALFORMED = f"{REVISE}/malformed"
SELECT_ACCEPTED = f"{SELECT}/accepted"
# RFT's rejection sampling: the samples kept, and the prompts with at least one.
RFT_KEPT = f"{RFT}/kept"
RFT_PROMPTS_COVERED = f"{RFT}/prompts_covered"
MT_BENCH_SCORE = f"{MT_BENCH}/score"
PAIRWISE_WIN_RATE = f"{PAIRWISE}/win_rate"
PAIRWISE_LC_WIN_RATE = f"{PAIRWISE}/lc_win_rate"
TRAIN_LOSS = f"{TRAIN}/loss"
TRAIN_TOKENS_PER_S = f"{TRAIN}/tokens_per_s"
TRAIN_OPTIMIZER_STEP_MS = f"{TRAIN}/optimizer_step_ms"


def metric(prefix: str, *parts: str) -> str:
    """A name built from parts known only at run time: ``metric(EVAL, "score", family)``."""
    return "/".join((prefix, *parts))


def is_headline(name: str) -> bool:
    """A benchmark's main numbers, the ones tables, plots and the leaderboard show: MT-Bench's score, each
    pairwise entry's win rate and LC win rate, each lm-eval task's metrics (``lm_eval/<task>/<metric>``)."""
    prefix, _, rest = name.partition("/")
    if prefix == MT_BENCH:
        return rest == "score"
    if prefix == PAIRWISE or prefix.startswith(PAIRWISE + "_"):
        return rest in ("win_rate", "lc_win_rate")
    return prefix == LM_EVAL and rest.count("/") == 1


def headlines(metrics: "dict[str, float]") -> list[str]:
    return sorted(n for n in metrics if is_headline(n))
