"""The methods besides SEFT as flows: SFT, IFT, DPO, SPIN (K iterations) and FIGA (METHODS.md §2–4, §7).

They share SEFT's machinery: the same suite prompts, sampler stages, cache
keys, training stage and MLflow run tree. Round 0 evaluates the starting
model; each training round (SPIN's iterations) is evaluated on the held-out
split. ``run_method`` is the body the flows and ``compare-methods`` share.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import pipeline_run, round_flow, run_result
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
# A method's round body returns (new policy, the training rows it used).
Round = tuple[str, str]


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


def supervised(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, items: str, previous, parent: str, force
) -> Round:
    """SFT or IFT on the reference answers of the training prompts."""
    data = rows(recipe, layout, "sft", k, force, items=items)
    return train_round(recipe, layout, k, policy, data, force), data


def dpo(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, items: str, previous, parent: str, force
) -> Round:
    """Reference answers against the policy's failing samples (``sampler.n`` per prompt)."""
    samples = policy_samples(recipe, layout, k, policy, items, force)
    scores = score_answers(score_samples, layout.stage("sample-scores", k), items, samples, force)
    data = rows(recipe, layout, "dpo", k, force, items=items, scores=scores)
    return train_round(recipe, layout, k, policy, data, force), data


def spin(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, items: str, previous: str | None, parent: str, force
) -> Round:
    """Iteration k: sample θ_{k-1}, pair its samples with the real answers (and iteration k-1's pairs),
    train θ_k against θ_{k-1}."""
    samples = policy_samples(recipe, layout, k, policy, items, force, n=1)
    data = rows(recipe, layout, "spin", k, force, items=items, samples=samples, previous=previous)
    train_config = recipe.train
    if k == recipe.spin.iterations and recipe.spin.last_beta is not None:
        preference = recipe.train.preference.model_copy(update={"beta": recipe.spin.last_beta})
        train_config = recipe.train.model_copy(update={"preference": preference})
    return train_round(recipe, layout, k, policy, data, force, train_config), data


def figa(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, items: str, previous, parent: str, force
) -> Round:
    """The policy's samples against their revisions: the SEFT reviser's, or the reference answers."""
    samples = policy_samples(recipe, layout, k, policy, items, force, n=1)
    revisions = None
    if recipe.figa.revised_from == "reviser":
        reviser = build_reviser(recipe, layout, policy, parent, force)
        revisions = revise_samples(recipe, layout.stage("revisions", k), reviser, samples, items, force)
    data = rows(recipe, layout, "figa", k, force, items=items, samples=samples, revisions=revisions)
    return train_round(recipe, layout, k, policy, data, force), data


BODIES = {"sft": supervised, "ift": supervised, "dpo": dpo, "spin": spin, "figa": figa}


@round_flow("method-round")
def method_round(
    recipe: Recipe, layout: RunLayout, k: int, policy: str, previous: str | None, parent: str, force: StageForcing
) -> tuple[str, dict[str, float], str]:
    """Round k of ``recipe.method`` from ``policy``; returns (new policy, its metrics, its training rows)."""
    items = training_prompts(recipe, layout, force)
    policy, data = BODIES[recipe.method](recipe, layout, k, policy, items, previous, parent, force)
    return policy, evaluate_round(recipe, layout, policy, k, parent, force, {"train": policy}), data


def run_method(recipe: Recipe, layout: RunLayout, parent: str, force: StageForcing) -> tuple[str, Rounds]:
    """Round 0 on the starting model, then the method's rounds; returns (final model, metrics per round)."""
    policy = provision_model(recipe.model.ref)
    rounds = {0: evaluate_round(recipe, layout, policy, 0, parent, force)}
    previous = None
    for k in range(1, (recipe.spin.iterations if recipe.method == "spin" else 1) + 1):
        policy, rounds[k], previous = method_round(recipe, layout, k, policy, previous, parent, force)
    return policy, rounds


def _method_flow(method: str):
    def method_flow(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
        with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
            if config.method != method:
                raise ValueError(f"the {method} flow got a {config.method} recipe")
            policy, rounds = run_method(config, layout, parent_run_id, StageForcing(STAGES, from_stage))
            return run_result(config, layout, parent_run_id, rounds, policy)

    # Named as the module attribute it is bound to, so a deployment's entrypoint
    # (flows/methods.py:sft_flow) loads it.
    method_flow.__name__ = method_flow.__qualname__ = f"{method}_flow"
    return flow(name=method)(method_flow)


sft_flow = _method_flow("sft")
ift_flow = _method_flow("ift")
dpo_flow = _method_flow("dpo")
spin_flow = _method_flow("spin")
figa_flow = _method_flow("figa")
FLOWS = {"sft": sft_flow, "ift": ift_flow, "dpo": dpo_flow, "spin": spin_flow, "figa": figa_flow}
