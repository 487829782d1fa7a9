"""SEFT (METHODS.md §1): train an adaptive reviser, then K rounds of sample -> revise -> SFT -> evaluate.

Round 0 evaluates the base model. The reviser is built once per run from the
base policy's graded samples (and a preference dataset, if given): a warm-up
as a plain reviser, then adaptive training on balanced decisions. Every round
samples the current policy on an unannotated prompt pool, lets the reviser
decide and revise, keeps the decisions that round accepts, fine-tunes the
policy on them and evaluates it on the held-out split. Every stage is cached
by its inputs, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

from pathlib import Path

from methods.run import Rounds, method_flow, round_flow
from methods.seft import targets
from methods.seft.report import revision_metrics, revision_table
from methods.shared import (
    build_reviser,
    evaluate_round,
    policy_samples,
    prompt_slice,
    revise_policy_samples,
    starting_model,
    suite_items,
    train_round,
    user_data,
)
from pipeline_lib import suite as suite_package
from pipeline_lib.core.errors import UserError
from pipeline_lib.revision.revise import REVISIONS_FILE
from pipeline_lib.store import read_manifest
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.evaluation import SAMPLE_TABLE_ROWS, log_score_by_round
from tasks.stage import Input, stage


@stage("select-targets", code=(targets, suite_package), tags=("cpu",))
def select_targets_stage(tmp: Path, revisions: Input, items: Input, accepted: list[str]) -> dict:
    """Keep the revised samples whose decision round k accepts, as SFT rows."""
    return targets.select_targets(Path(items), Path(revisions) / REVISIONS_FILE, accepted, tmp)


def pool_prompts(ctx: RunContext, k: int, prompts: str | None) -> str:
    """Round k's unannotated prompts, new ones each round by default: from the prepared ``data.prompts``, or
    the suite train items after the reviser's."""
    first, seft = ctx.recipe.reviser.n_prompts, ctx.recipe.seft
    if prompts:
        return prompt_slice(ctx, prompts, k, "pool", seft.pool_start(k), seft.pool_end(k))
    return suite_items(ctx, "train", "pool", k, first + seft.pool_start(k), first + seft.pool_end(k))


def _check_pool_size(ctx: RunContext, prompts: str) -> None:
    have, seft = (read_manifest(Path(prompts)) or {}).get("rows", 0), ctx.recipe.seft
    needed = seft.pool_end(seft.rounds)
    if have < needed:
        what = "seft.pool_prompts × seft.rounds" if seft.fresh_prompts else "seft.pool_prompts"
        raise UserError(
            f"data.prompts has {have} prompts once prepared, fewer than {what} ({needed}); "
            "give more prompts, or lower seft.pool_prompts or seft.rounds"
        )


@round_flow("seft-round")
def seft_round(ctx: RunContext, k: int, policy: str, reviser: str, prompts: str | None) -> tuple[str, dict[str, float]]:
    """Round k: sample the current policy, revise, keep the accepted targets, fine-tune, evaluate."""
    pool = pool_prompts(ctx, k, prompts)
    samples = policy_samples(ctx, k, policy, pool, seed=ctx.seed("round", k))
    revisions = revise_policy_samples(ctx, k, reviser, samples, pool)
    selected = ctx.run(select_targets_stage, k, revisions=revisions, items=pool, accepted=ctx.recipe.seft.accepted(k))
    _check_some_accepted(k, revisions, selected)
    rows = str(Path(selected) / TRAIN_ROWS_FILE)
    new_policy = train_round(ctx, k, policy, rows)
    return new_policy, evaluate_round(
        ctx, new_policy, k, trained=True,
        outputs={"revise": revisions, "select": selected},
        metrics=revision_metrics(revisions, selected),
        tables={f"revisions_round{k}.json": revision_table(selected, SAMPLE_TABLE_ROWS)},
        datasets={f"sft-targets-round{k}": rows},
    )  # fmt: skip


def _check_some_accepted(k: int, revisions_dir: str, selected_dir: str) -> None:
    """Stop with the numbers a user needs, instead of an empty training set failing deep in the trainer."""
    selected = read_manifest(Path(selected_dir)) or {}
    if selected.get("accepted"):
        return
    revised = read_manifest(Path(revisions_dir)) or {}
    raise UserError(
        f"round {k}: no revised sample was accepted for training (accepted decisions {selected.get('accepted_decisions')}; "
        f"reviser decisions {revised.get('decisions')}, malformed {revised.get('malformed')} "
        f"{revised.get('malformed_reasons') or ''}); see {Path(revisions_dir) / REVISIONS_FILE}. "
        "Train the reviser longer (reviser.train.epochs, reviser.train.lr) or accept more decisions (seft.accept)."
    )


def run(ctx: RunContext) -> tuple[str, Rounds]:
    """Round 0, the reviser, then the rounds; returns (final policy, metrics per round)."""
    policy = starting_model(ctx)
    prompts = user_data(ctx, "prompts")
    if prompts:
        _check_pool_size(ctx, prompts)
    rounds = {0: evaluate_round(ctx, policy, 0)}
    reviser = build_reviser(ctx, policy)
    for k in range(1, ctx.recipe.seft.rounds + 1):
        policy, rounds[k] = seft_round(ctx, k, policy, reviser, prompts)
    log_score_by_round(ctx.parent, rounds)
    return policy, rounds


seft_flow = method_flow("seft", run)
