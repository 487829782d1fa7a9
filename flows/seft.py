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
from typing import Any

from prefect import flow

from flows.common import pipeline_run, round_flow, run_result
from flows.evaluate import answer_items, evaluate_round, score_answers, suite_items
from pipeline_lib import revision, suite
from pipeline_lib.config import Recipe
from pipeline_lib.errors import UserError
from pipeline_lib.runs import RunLayout, StageForcing
from pipeline_lib.sampling import SamplingParams, derive_seed, resolve_backend
from pipeline_lib.seft import reviser_data, revise as revise_lib, targets
from pipeline_lib.store import read_manifest, source_digest
from tasks.evaluation import score
from tasks.models import provision_model
from tasks.sampling import generate_answers
from tasks.seft import build_reviser_data, log_reviser, log_score_by_round, revise, select_targets
from tasks.stage import run_stage
from tasks.training import train_policy, train_reviser, warmup_reviser

sample_policy = generate_answers.with_options(name="sample-policy")
score_samples = score.with_options(name="score-samples")

# In the order the flow first runs them, for --from-stage.
STAGES = [
    "prepare-suite",
    "generate-answers",
    "score",
    "sample-policy",
    "score-samples",
    "build-reviser-data",
    "warmup-reviser",
    "train-reviser",
    "revise",
    "select-targets",
    "train-policy",
]


def sample(
    recipe: Recipe, layout: RunLayout, link: Path, model: str, items: str, force: StageForcing, **params: Any
) -> str:
    """The policy's samples for ``items``: the ``sampler`` settings with ``params`` (n, seed...) overriding."""
    params = SamplingParams.from_config(recipe.sampler, **params)
    return answer_items(sample_policy, recipe, link, model, items, params, recipe.sampler.batch_size, force)


def train(stage, recipe: Recipe, link: Path, model: str, rows_file: str, train_config, seed: int, force) -> str:
    return run_stage(
        stage,
        config={"train": train_config, "seed": seed, "dtype": recipe.model.dtype},
        inputs={"model": model, "rows": rows_file},
        link_as=link,
        force=force,
        model_path=model,
        rows_file=rows_file,
        train=train_config,
        seed=seed,
        dtype=recipe.model.dtype,
    )


def build_reviser(recipe: Recipe, layout: RunLayout, base_model: str, parent_run_id: str, force: StageForcing) -> str:
    """Graded samples -> decision-labelled data -> warm-up -> adaptive training; returns the reviser's folder."""
    reviser = recipe.reviser
    scores = None
    if reviser.n_prompts:
        items = suite_items(recipe, layout.stage("suite-reviser"), "train", force, 0, reviser.n_prompts)
        temperature = recipe.sampler.temperature if reviser.temperature is None else reviser.temperature
        samples = sample(
            recipe, layout, layout.stage("reviser-source-samples"), base_model, items, force,
            n=reviser.samples_per_prompt, seed=derive_seed(recipe.seed, "reviser-source"), temperature=temperature,
        )  # fmt: skip
        scores = score_answers(score_samples, layout.stage("reviser-source-scores"), items, samples, force)
    inputs = {"scores": scores} if scores else {}
    if reviser.preference and Path(reviser.preference.source).exists():
        inputs["preference"] = reviser.preference.source
    data = run_stage(
        build_reviser_data,
        config={
            "reviser": reviser.model_dump(exclude={"warmup", "train"}),
            "seed": recipe.seed,
            "code": source_digest(revision, reviser_data),
        },
        inputs=inputs,
        link_as=layout.stage("reviser-data"),
        force=force,
        scores_dir=scores,
        reviser=reviser,
        seed=recipe.seed,
    )
    start = provision_model(reviser.model) if reviser.model else base_model
    warm = train(
        warmup_reviser, recipe, layout.stage("reviser-warmup"), start,
        str(Path(data) / reviser_data.WARMUP_FILE), reviser.warmup, recipe.seed, force,
    )  # fmt: skip
    trained = train(
        train_reviser, recipe, layout.stage("reviser"), warm,
        str(Path(data) / reviser_data.ADAPTIVE_FILE), reviser.train, recipe.seed, force,
    )  # fmt: skip
    log_reviser(parent_run_id, data, warm, trained)
    return trained


def revise_samples(recipe: Recipe, link: Path, reviser: str, samples: str, items: str, force: StageForcing) -> str:
    """The reviser's decision and revision for every sample (SEFT's rounds, FIGA's revised answers)."""
    return run_stage(
        revise,
        config={
            "max_new_tokens": recipe.reviser.max_new_tokens,
            "backend": resolve_backend(recipe.sampler)[0],
            "dtype": recipe.model.dtype,
            "seed": recipe.seed,
            "code": source_digest(revision, revise_lib),
        },
        inputs={"reviser": reviser, "samples": samples, "items": items},
        link_as=link,
        force=force,
        items_dir=items,
        samples_dir=samples,
        reviser_path=reviser,
        dtype=recipe.model.dtype,
        sampler=recipe.sampler,
        max_new_tokens=recipe.reviser.max_new_tokens,
        batch_size=recipe.reviser.batch_size,
        seed=recipe.seed,
    )


def pool_prompts(recipe: Recipe, layout: RunLayout, k: int, force: StageForcing) -> str:
    """Round k's unannotated prompts: the suite train items after the reviser's, new ones each round by default."""
    first = recipe.reviser.n_prompts
    link = layout.stage("suite-pool", k)
    return suite_items(recipe, link, "train", force, first + recipe.seft.pool_start(k), first + recipe.seft.pool_end(k))


@round_flow("seft-round")
def self_evolution_round(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, reviser: str, pool: str, parent_run_id: str, force
) -> tuple[str, dict[str, float]]:
    """Round k: sample the current policy, revise, keep the accepted targets, fine-tune, evaluate."""
    samples = sample(
        recipe, layout, layout.stage("policy-samples", k), policy, pool, force, seed=derive_seed(recipe.seed, "round", k)
    )
    revisions = revise_samples(recipe, layout.stage("revisions", k), reviser, samples, pool, force)
    selected = run_stage(
        select_targets,
        config={"accepted": recipe.seft.accepted(k), "code": source_digest(targets, suite)},
        inputs={"revisions": revisions, "items": pool},
        link_as=layout.stage("targets", k),
        force=force,
        items_dir=pool,
        revisions_dir=revisions,
        accepted=recipe.seft.accepted(k),
    )
    _check_some_accepted(k, revisions, selected)
    new_policy = train(
        train_policy, recipe, layout.stage("policy", k), policy,
        str(Path(selected) / targets.TRAIN_ROWS_FILE), recipe.train, derive_seed(recipe.seed, "train", k), force,
    )  # fmt: skip
    round_dirs = {"revise": revisions, "select": selected, "train": new_policy}
    return new_policy, evaluate_round(recipe, layout, new_policy, k, parent_run_id, force, round_dirs)


def _check_some_accepted(k: int, revisions_dir: str, selected_dir: str) -> None:
    """Stop with the numbers a user needs, instead of an empty training set failing deep in the trainer."""
    selected = read_manifest(Path(selected_dir)) or {}
    if selected.get("accepted"):
        return
    revised = read_manifest(Path(revisions_dir)) or {}
    raise UserError(
        f"round {k}: no revised sample was accepted for training (accepted decisions {selected.get('accepted_decisions')}; "
        f"reviser decisions {revised.get('decisions')}, malformed {revised.get('malformed')} "
        f"{revised.get('malformed_reasons') or ''}); see {Path(revisions_dir) / revise_lib.REVISIONS_FILE}. "
        "Train the reviser longer (reviser.train.epochs, reviser.train.lr) or accept more decisions (seft.accept)."
    )


def run_seft(config: Recipe, layout: RunLayout, parent_run_id: str, force: StageForcing) -> tuple[str, dict[int, dict[str, float]]]:
    """Round 0, the reviser, then the rounds; returns (final policy, metrics per round)."""
    base_model = provision_model(config.model.ref)
    rounds = {0: evaluate_round(config, layout, base_model, 0, parent_run_id, force)}
    reviser = build_reviser(config, layout, base_model, parent_run_id, force)
    policy = base_model
    for k in range(1, config.seft.rounds + 1):
        pool = pool_prompts(config, layout, k, force)
        policy, rounds[k] = self_evolution_round(config, layout, k, policy, reviser, pool, parent_run_id, force)
    log_score_by_round(parent_run_id, rounds)
    return policy, rounds


@flow(name="seft")
def seft(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
        policy, rounds = run_seft(config, layout, parent_run_id, StageForcing(STAGES, from_stage))
        return run_result(config, layout, parent_run_id, rounds, policy)


FLOW = seft
