"""``method: dpo``: one round of DPO (METHODS.md §7): on the user's ``data.preference`` pairs as given (offline),
or else the suite's reference answers against the policy's failing samples (on-policy, where a verifier exists)."""

from __future__ import annotations

from pathlib import Path

from methods.dpo import pairs
from methods.run import Rounds, method_flow, round_flow
from methods.shared import (
    data_inputs,
    evaluate_round,
    one_round,
    policy_samples,
    sample_scores,
    train_round,
    training_prompts,
    user_data,
)
from pipeline_lib.data.prepare import ROWS_FILE
from pipeline_lib.suite.scoring import SCORES_FILE
from pipeline_lib.training import rows as training_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.stage import Input, stage


@stage("build-training-rows", code=(pairs, training_rows), tags=("cpu",))
def dpo_training_rows(tmp: Path, items: Input, scores: Input) -> dict:
    """Each prompt's reference answer against its lowest-scoring sample, where that sample fails."""
    return pairs.dpo_pairs(Path(items), Path(scores) / SCORES_FILE, tmp)


@stage("build-training-rows", code=(pairs, training_rows), tags=("cpu",))
def dpo_given_pairs(tmp: Path, prepared: Input) -> dict:
    """The user's prepared ``data.preference`` pairs, as they are."""
    return pairs.preference_pairs(Path(prepared) / ROWS_FILE, tmp)


@round_flow("method-round")
def dpo_round(ctx: RunContext, k: int, model: str) -> tuple[str, dict[str, float]]:
    """Round k: the given pairs, or ``sampler.n`` samples per prompt from ``model``, verified and paired; trained on."""
    prepared = user_data(ctx, "preference")
    if prepared:
        data = ctx.run(dpo_given_pairs, k, prepared=prepared)
    else:
        items = training_prompts(ctx)
        samples = policy_samples(ctx, k, model, items, seed=ctx.seed("round", k))
        data = ctx.run(dpo_training_rows, k, items=items, scores=sample_scores(ctx, k, items, samples))
    policy = train_round(ctx, k, model, str(Path(data) / TRAIN_ROWS_FILE))
    return policy, evaluate_round(ctx, policy, k, trained=True, datasets=data_inputs("preference", prepared))


def run(ctx: RunContext) -> tuple[str, Rounds]:
    return one_round(ctx, dpo_round)


dpo_flow = method_flow("dpo", run)
