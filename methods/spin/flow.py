"""``method: spin``: K iterations of self-play against the real answers (METHODS.md §7): the user's ``data.sft``
replies, or the suite's reference answers.

Iteration k samples θ_{k-1} once per prompt, pairs its samples with the real
answers (and iteration k-1's pairs), and trains θ_k against θ_{k-1}; each
iteration is evaluated as round k.
"""

from __future__ import annotations

from pathlib import Path

from methods.run import Rounds, method_flow, round_flow
from methods.shared import data_inputs, evaluate_round, policy_samples, starting_model, train_round, training_prompts, user_data
from methods.spin import pairs
from pipeline_lib.training import rows as training_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.sampling import SAMPLES_FILE
from tasks.stage import Input, OptionalInput, stage


@stage("build-training-rows", code=(pairs, training_rows), tags=("cpu",))
def spin_training_rows(tmp: Path, items: Input, samples: Input, previous: OptionalInput, seed: int) -> dict:
    """This iteration's pairs, shuffled (``seed``) with those of ``previous``, the last iteration's rows."""
    previous_pairs = Path(previous) / pairs.PAIRS_FILE if previous else None
    return pairs.spin_pairs(Path(items), Path(samples) / SAMPLES_FILE, previous_pairs, seed, tmp)


def _train_config(ctx: RunContext, k: int):
    """``train``, with ``spin.last_beta`` as the preference β of the last iteration when set."""
    recipe = ctx.recipe
    if k != recipe.spin.iterations or recipe.spin.last_beta is None:
        return recipe.train
    preference = recipe.train.preference.model_copy(update={"beta": recipe.spin.last_beta})
    return recipe.train.model_copy(update={"preference": preference})


@round_flow("method-round")
def iteration(ctx: RunContext, k: int, model: str, previous: str | None) -> tuple[str, dict[str, float], str]:
    """Iteration k from θ_{k-1} = ``model``; returns (θ_k, its metrics, its training rows)."""
    prepared = user_data(ctx, "sft")
    items = prepared or training_prompts(ctx)
    samples = policy_samples(ctx, k, model, items, n=1, seed=ctx.seed("round", k))
    data = ctx.run(spin_training_rows, k, items=items, samples=samples, previous=previous, seed=ctx.recipe.seed)
    policy = train_round(ctx, k, model, str(Path(data) / TRAIN_ROWS_FILE), _train_config(ctx, k))
    return policy, evaluate_round(ctx, policy, k, trained=True, datasets=data_inputs("sft", prepared)), data


def run(ctx: RunContext) -> tuple[str, Rounds]:
    model = starting_model(ctx)
    rounds = {0: evaluate_round(ctx, model, 0)}
    previous = None
    for k in range(1, ctx.recipe.spin.iterations + 1):
        model, rounds[k], previous = iteration(ctx, k, model, previous)
    return model, rounds


spin_flow = method_flow("spin", run)
