"""FIGA (METHODS.md §4): token weights from the policy's samples against their revisions, in one round.

Round 0 evaluates the starting model. Round 1 samples the policy once per
training prompt (the suite's, or ``data.prompts``), has each sample revised
(by SEFT's reviser, built from the same policy, or replaced by the suite's
reference answer), trains on the pairs with the FIGA objective and evaluates
the result on the held-out split. With ``data.revisions`` it trains on the
user's (original, revised) pairs instead, sampling nothing.
"""

from __future__ import annotations

from pathlib import Path

from methods.figa import rows
from methods.run import Rounds, method_flow, round_flow
from methods.shared import (
    build_reviser,
    data_inputs,
    evaluate_round,
    policy_samples,
    revise_policy_samples,
    starting_model,
    train_round,
    training_prompts,
    user_data,
)
from pipeline_lib.data.prepare import ROWS_FILE
from pipeline_lib.revision.revise import REVISIONS_FILE
from pipeline_lib.training import rows as training_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.sampling import SAMPLES_FILE
from tasks.stage import Input, OptionalInput, stage


@stage("build-training-rows", code=(rows, training_rows), tags=("cpu",))
def figa_training_rows(tmp: Path, items: Input, samples: Input, revisions: OptionalInput = None) -> dict:
    """Pairs of each prompt's first sample and its revision (``revisions``), or its reference answer without them."""
    revisions_file = Path(revisions) / REVISIONS_FILE if revisions else None
    return rows.figa_rows(Path(items), Path(samples) / SAMPLES_FILE, revisions_file, tmp)


@stage("build-training-rows", code=(rows, training_rows), tags=("cpu",))
def figa_given_rows(tmp: Path, prepared: Input) -> dict:
    """The user's prepared ``data.revisions`` pairs, as they are."""
    return rows.revision_rows(Path(prepared) / ROWS_FILE, tmp)


def _pairs(ctx: RunContext, k: int, policy: str) -> tuple[str, dict[str, str] | None]:
    """Round k's (original, revised) pairs: the user's, or the policy's samples and their revisions; and the
    prepared data they came from."""
    if ctx.recipe.figa.revised_from == "data":
        prepared = user_data(ctx, "revisions")
        return ctx.run(figa_given_rows, k, prepared=prepared), data_inputs("revisions", prepared)
    prompts = user_data(ctx, "prompts")
    items = prompts or training_prompts(ctx)
    samples = policy_samples(ctx, k, policy, items, seed=ctx.seed("round", k), n=1)
    revisions = None
    if ctx.recipe.figa.revised_from == "reviser":
        revisions = revise_policy_samples(ctx, k, build_reviser(ctx, policy), samples, items)
    pairs = ctx.run(figa_training_rows, k, items=items, samples=samples, revisions=revisions)
    return pairs, data_inputs("prompts", prompts)


@round_flow("method-round")
def figa_round(ctx: RunContext, k: int, policy: str) -> tuple[str, dict[str, float]]:
    """Round k: the (original, revised) pairs, trained on with the FIGA objective, then evaluated."""
    pairs, data = _pairs(ctx, k, policy)
    new_policy = train_round(ctx, k, policy, str(Path(pairs) / TRAIN_ROWS_FILE))
    return new_policy, evaluate_round(ctx, new_policy, k, trained=True, datasets=data)


def run(ctx: RunContext) -> tuple[str, Rounds]:
    """Round 0 on the starting model, then FIGA's one training round."""
    policy = starting_model(ctx)
    rounds = {0: evaluate_round(ctx, policy, 0)}
    policy, rounds[1] = figa_round(ctx, 1, policy)
    return policy, rounds


figa_flow = method_flow("figa", run)
