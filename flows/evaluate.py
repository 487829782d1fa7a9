"""Evaluate a model on the built-in suite's held-out split (round 0 of every pipeline).

Stages: prepare-suite -> generate-answers -> score, each cached by its inputs;
the scores go to MLflow as a child run ``round-K`` of the pipeline's parent run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import Task, flow

from flows.common import pipeline_run, run_result
from pipeline_lib.config import Recipe
from pipeline_lib.runs import RunLayout, StageForcing
from pipeline_lib.sampling import SamplingParams, resolve_backend
from pipeline_lib import evaluation, suite
from pipeline_lib.store import source_digest
from tasks.data import prepare_suite
from tasks.evaluation import log_round, score
from tasks.models import provision_model
from tasks.sampling import generate_answers
from tasks.stage import run_stage

STAGES = ["prepare-suite", "generate-answers", "score"]


def suite_items(
    recipe: Recipe, link: Path, split: str, force, start: int = 0, stop: int | None = None
) -> str:
    """One split of the built-in suite, or its items ``start:stop`` (SEFT's reviser and pool prompts)."""
    return run_stage(
        prepare_suite,
        config={"suite": recipe.suite.for_split(split), "slice": [start, stop], "code": source_digest(suite, evaluation)},
        inputs={},
        link_as=link,
        force=force,
        suite=recipe.suite,
        split=split,
        start=start,
        stop=stop,
    )


def score_answers(stage: Task, link: Path, items_dir: str, samples_dir: str, force) -> str:
    """Verify sampled answers against their suite items with ``stage``."""
    return run_stage(
        stage,
        config={"code": source_digest(suite, evaluation)},
        inputs={"items": items_dir, "samples": samples_dir},
        link_as=link,
        force=force,
        items_dir=items_dir,
        samples_dir=samples_dir,
    )


def answer_items(
    stage: Task, recipe: Recipe, link: Path, model_path: str, items_dir: str, params: SamplingParams, batch_size: int, force
) -> str:
    """Sample answers to suite items with ``stage`` (held-out answers, or a policy's samples)."""
    return run_stage(
        stage,
        config={"params": params.describe(), "backend": resolve_backend(recipe.sampler)[0], "dtype": recipe.model.dtype},
        inputs={"model": model_path, "items": items_dir},
        link_as=link,
        force=force,
        items_dir=items_dir,
        model_path=model_path,
        dtype=recipe.model.dtype,
        sampler=recipe.sampler,
        params=params,
        batch_size=batch_size,
    )


def evaluate_round(
    recipe: Recipe,
    layout: RunLayout,
    model_path: str,
    round_index: int,
    parent_run_id: str,
    force: StageForcing,
    round_dirs: dict[str, str] | None = None,
) -> dict[str, float]:
    """Greedy answers on the held-out split, verified and logged with the round's other outputs.

    Shared by every method's flow; ``round_dirs`` are the round's training
    stage outputs to report alongside (see ``tasks.evaluation.log_round``).
    """
    items_dir = suite_items(recipe, layout.stage("suite-eval"), "eval", force)
    params = SamplingParams(temperature=0.0, max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
    link = layout.stage("eval-answers", round_index)
    samples_dir = answer_items(generate_answers, recipe, link, model_path, items_dir, params, recipe.eval.batch_size, force)
    scores_dir = score_answers(score, layout.stage("eval-scores", round_index), items_dir, samples_dir, force)
    return log_round(parent_run_id, round_index, scores_dir, items_dir, round_dirs)


@flow(name="evaluate")
def evaluate(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
        force = StageForcing(STAGES, from_stage)
        model_path = provision_model(config.model.ref)
        metrics = evaluate_round(config, layout, model_path, 0, parent_run_id, force)
        return run_result(config, layout, parent_run_id, {0: metrics}, None)


FLOW = evaluate
