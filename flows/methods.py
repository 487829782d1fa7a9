"""The methods besides SEFT as flows: SFT, IFT, DPO, SPIN (K iterations) and FIGA (METHODS.md §2–4, §7).

They share SEFT's machinery: the same suite prompts, sampler stages, cache
keys, training stage and MLflow run tree. Round 0 evaluates the starting
model; each training round (SPIN's iterations) is evaluated on the held-out
split. ``run_method`` is the body the flows and ``compare-methods`` share.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import pipeline_run
from flows.evaluate import evaluate_round, score_answers, suite_items
from flows.seft import STAGES as SEFT_STAGES
from flows.seft import build_reviser, revise_samples, sample, score_samples, train
from pipeline_lib import method_rows
from pipeline_lib.config import Recipe
from pipeline_lib.runs import RunLayout, StageForcing
from pipeline_lib.sampling import derive_seed
from pipeline_lib.store import source_digest
from tasks.method_rows import build_training_rows
from tasks.models import provision_model
from tasks.stage import run_stage
from tasks.training import train_policy

# In the order the flows first run them, for --from-stage: SEFT's, with the
# methods' own row building where SEFT selects its targets.
STAGES = [("build-training-rows" if stage == "select-targets" else stage) for stage in SEFT_STAGES]
Rounds = dict[int, dict[str, float]]


def training_prompts(recipe: Recipe, layout: RunLayout, force: StageForcing) -> str:
    start, stop = recipe.prompts.start, recipe.prompts.stop(recipe.suite.n_train)
    return suite_items(recipe, layout.stage("suite-train"), "train", force, start, stop)


def policy_samples(
    recipe: Recipe, layout: RunLayout, k: int, model: str, items: str, force: StageForcing, **params
) -> str:
    """Round k's samples of ``model`` on ``items``: the ``sampler`` settings, ``params`` (n...) overriding."""
    link = layout.stage("policy-samples", k)
    return sample(recipe, layout, link, model, items, force, seed=derive_seed(recipe.seed, "round", k), **params)


def rows(recipe: Recipe, layout: RunLayout, kind: str, k: int, force: StageForcing, **dirs: str | None) -> str:
    """Round k's ``build-training-rows`` stage; ``dirs`` are its input folders (items, samples, scores...)."""
    link = layout.stage("training-rows", k)
    inputs = {name: path for name, path in dirs.items() if path}
    return run_stage(
        build_training_rows,
        config={"kind": kind, "seed": recipe.seed, "code": source_digest(method_rows)},
        inputs=inputs,
        link_as=link,
        force=force,
        kind=kind,
        seed=recipe.seed,
        **{f"{name}_dir": path for name, path in dirs.items()},
    )


def train_round(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, rows_dir: str, force: StageForcing, train_config=None
) -> str:
    """Round k's policy update: ``train.objective`` on the rows in ``rows_dir``, from ``policy``."""
    rows_file = str(Path(rows_dir) / method_rows.TRAIN_ROWS_FILE)
    config = train_config or recipe.train
    seed = derive_seed(recipe.seed, "train", k)
    return train(train_policy, recipe, layout.stage("policy", k), policy, rows_file, config, seed, force)


def supervised(recipe: Recipe, layout: RunLayout, base: str, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """SFT or IFT on the reference answers of the training prompts."""
    items = training_prompts(recipe, layout, force)
    data = rows(recipe, layout, "sft", 1, force, items=items)
    policy = train_round(recipe, layout, 1, base, data, force)
    return policy, {1: evaluate_round(recipe, layout, policy, 1, parent, force, {"train": policy})}


def dpo(recipe: Recipe, layout: RunLayout, base: str, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """Reference answers against the base policy's failing samples (``sampler.n`` per prompt)."""
    items = training_prompts(recipe, layout, force)
    samples = policy_samples(recipe, layout, 1, base, items, force)
    scores = score_answers(score_samples, layout.stage("sample-scores", 1), items, samples, force)
    data = rows(recipe, layout, "dpo", 1, force, items=items, scores=scores)
    policy = train_round(recipe, layout, 1, base, data, force)
    return policy, {1: evaluate_round(recipe, layout, policy, 1, parent, force, {"train": policy})}


def spin(recipe: Recipe, layout: RunLayout, base: str, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """K iterations: sample θ_t, pair its samples with the real answers, train θ_{t+1} against θ_t."""
    items = training_prompts(recipe, layout, force)
    policy, previous, rounds = base, None, {}
    for k in range(1, recipe.spin.iterations + 1):
        samples = policy_samples(recipe, layout, k, policy, items, force, n=1)
        data = rows(recipe, layout, "spin", k, force, items=items, samples=samples, previous=previous)
        train_config = recipe.train
        if k == recipe.spin.iterations and recipe.spin.last_beta is not None:
            preference = recipe.train.preference.model_copy(update={"beta": recipe.spin.last_beta})
            train_config = recipe.train.model_copy(update={"preference": preference})
        policy = train_round(recipe, layout, k, policy, data, force, train_config)
        rounds[k] = evaluate_round(recipe, layout, policy, k, parent, force, {"train": policy})
        previous = data
    return policy, rounds


def figa(recipe: Recipe, layout: RunLayout, base: str, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """The base policy's samples against their revisions: the SEFT reviser's, or the reference answers."""
    items = training_prompts(recipe, layout, force)
    samples = policy_samples(recipe, layout, 1, base, items, force, n=1)
    revisions = None
    if recipe.figa.revised_from == "reviser":
        reviser = build_reviser(recipe, layout, base, parent, force)
        revisions = revise_samples(recipe, layout.stage("revisions", 1), reviser, samples, items, force)
    data = rows(recipe, layout, "figa", 1, force, items=items, samples=samples, revisions=revisions)
    policy = train_round(recipe, layout, 1, base, data, force)
    return policy, {1: evaluate_round(recipe, layout, policy, 1, parent, force, {"train": policy})}


BODIES = {"sft": supervised, "ift": supervised, "dpo": dpo, "spin": spin, "figa": figa}


def run_method(recipe: Recipe, layout: RunLayout, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """Round 0 on the starting model, then the method's rounds; returns (final model, metrics per round)."""
    base = provision_model(recipe.model.ref)
    rounds = {0: evaluate_round(recipe, layout, base, 0, parent, force)}
    policy, trained = BODIES[recipe.method](recipe, layout, base, parent, force)
    return policy, {**rounds, **trained}


def _method_flow(method: str):
    @flow(name=method)
    def method_flow(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
        with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
            if config.method != method:
                raise ValueError(f"the {method} flow got a {config.method} recipe")
            policy, rounds = run_method(config, layout, parent_run_id, StageForcing(STAGES, from_stage))
            run_dir = str(layout.root)
            return {"run_dir": run_dir, "mlflow_run_id": parent_run_id, "rounds": rounds, "final_model": policy}

    return method_flow


sft_flow = _method_flow("sft")
ift_flow = _method_flow("ift")
dpo_flow = _method_flow("dpo")
spin_flow = _method_flow("spin")
figa_flow = _method_flow("figa")
FLOWS = {"sft": sft_flow, "ift": ift_flow, "dpo": dpo_flow, "spin": spin_flow, "figa": figa_flow}
