"""Evaluate a model on the built-in suite's held-out split (round 0 of every pipeline).

Stages: prepare-suite -> generate-answers -> score, each cached by its inputs;
the scores go to MLflow as a child run ``round-0`` of the pipeline's parent run.
"""

from __future__ import annotations

from prefect import flow

from flows.common import pipeline_run
from pipeline_lib.config import Recipe, hash_json
from pipeline_lib.runs import RunLayout, stages_to_force
from pipeline_lib.sampling import SamplingParams
from pipeline_lib.store import cache_key, digest_path
from tasks.data import prepare_suite
from tasks.evaluation import log_evaluation, score
from tasks.models import provision_model
from tasks.sampling import generate_answers
from tasks.stage import run_stage

STAGES = ["prepare-suite", "generate-answers", "score"]


def evaluate_round(
    recipe: Recipe, layout: RunLayout, model: dict[str, str], round_index: int, parent_run_id: str, force: set[str]
) -> dict[str, float]:
    """Greedy answers on the held-out split, verified and logged; shared by every method's flow."""
    items_dir = run_stage(
        prepare_suite,
        layout.stage("suite-eval"),
        cache_key("prepare-suite", recipe.section_hash("suite"), {}),
        force="prepare-suite" in force,
        suite=recipe.suite,
        split="eval",
    )
    params = SamplingParams(temperature=0.0, max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
    generate_config = {"eval": recipe.eval.model_dump(), "backend": recipe.sampler.backend, "dtype": recipe.model.dtype}
    samples_dir = run_stage(
        generate_answers,
        layout.stage("eval-answers", round_index),
        cache_key("generate-answers", hash_json(generate_config), {"model": model["digest"], "items": digest_path(items_dir)}),
        force="generate-answers" in force,
        items_dir=items_dir,
        model_path=model["path"],
        dtype=recipe.model.dtype,
        sampler=recipe.sampler,
        params=params,
        batch_size=recipe.eval.batch_size,
    )
    scores_dir = run_stage(
        score,
        layout.stage("eval-scores", round_index),
        cache_key("score", "", {"items": digest_path(items_dir), "samples": digest_path(samples_dir)}),
        force="score" in force,
        items_dir=items_dir,
        samples_dir=samples_dir,
    )
    return log_evaluation(parent_run_id, round_index, scores_dir, items_dir)


@flow(name="evaluate", log_prints=True)
def evaluate(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
        force = stages_to_force(STAGES, from_stage)
        model = provision_model(config.model.ref)
        metrics = evaluate_round(config, layout, model, 0, parent_run_id, force)
        return {"run_dir": str(layout.root), "mlflow_run_id": parent_run_id, "rounds": {0: metrics}}


FLOW = evaluate
