"""CEL ("Cogito, ergo ludo", METHODS.md §6): an agent learns a grid game by rewriting its rules and playbook.

Round 0 plays the held-out layouts with the starting (empty) knowledge: the
zero-shot baseline. Round 1 plays the learning episodes, reflecting after
each, then the held-out layouts with the learned knowledge frozen. Round 2,
when ``cel.sft.enabled``, fine-tunes the policy on the steps of the learning
episodes that succeeded and plays the held-out layouts again. Every episode
goes through the recipe's sampler, so any backend and any model can play.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.common import pipeline_run, round_flow, run_result
from flows.seft import train
from pipeline_lib import agent, cel, games
from pipeline_lib.config import Recipe
from pipeline_lib.method_rows import TRAIN_ROWS_FILE
from pipeline_lib.runs import RunLayout, StageForcing
from pipeline_lib.sampling import derive_seed, resolve_backend
from pipeline_lib.store import read_manifest, source_digest
from tasks.cel import KNOWLEDGE_FILE, cel_evaluate, cel_learn, cel_sft_rows, read_knowledge
from tasks.cel_report import log_cel_round
from tasks.models import provision_model
from tasks.stage import run_stage
from tasks.training import train_policy

STAGES = ["cel-evaluate", "cel-learn", "cel-sft-rows", "train-policy"]
# Settings only the held-out play (or the SFT round) reads: changing them keeps the learning episodes.
NOT_LEARNING = {"eval_episodes", "eval_temperature", "baseline", "sft"}
NOT_PLAYING = {"learn_episodes", "temperature", "reflection_max_new_tokens", "trajectory_char_budget", "sft"}


def _play_config(recipe: Recipe, leave_out: set[str]) -> dict:
    assert recipe.cel is not None
    return {
        "cel": recipe.cel.model_dump(mode="json", exclude=leave_out),
        "seed": recipe.seed,
        "sampler": recipe.sampler.model_dump(mode="json", include={"top_p"}),
        "backend": resolve_backend(recipe.sampler)[0],
        "dtype": recipe.model.dtype,
        "code": source_digest(agent, games, cel),
    }


def _play_params(recipe: Recipe, model: str) -> dict:
    return {"model_path": model, "dtype": recipe.model.dtype, "sampler": recipe.sampler, "game": recipe.cel, "seed": recipe.seed}


def evaluate_held_out(
    recipe: Recipe, layout: RunLayout, k: int, model: str, knowledge_dir: str | None, force: StageForcing
) -> str:
    inputs = {"model": model, **({"knowledge": str(Path(knowledge_dir) / KNOWLEDGE_FILE)} if knowledge_dir else {})}
    # The layouts themselves, not learn_episodes: held-out seeds skip the learning levels.
    config = {**_play_config(recipe, NOT_PLAYING), "layouts": cel.held_out_seeds(recipe.cel, recipe.seed)}
    return run_stage(
        cel_evaluate,
        config=config,
        inputs=inputs,
        link_as=layout.stage("cel-evaluate", k),
        force=force,
        knowledge_dir=knowledge_dir,
        **_play_params(recipe, model),
    )


@round_flow("cel-learning-round")
def learning_round(
    recipe: Recipe, layout: RunLayout, k: int, model: str, parent: str, force: StageForcing
) -> tuple[dict[str, float], str]:
    """Learning episodes, then the held-out layouts with what they taught; returns (metrics, learning output)."""
    learned = run_stage(
        cel_learn,
        config=_play_config(recipe, NOT_LEARNING),
        inputs={"model": model},
        link_as=layout.stage("cel-learn", k),
        force=force,
        **_play_params(recipe, model),
    )
    held_out = evaluate_held_out(recipe, layout, k, model, learned, force)
    return log_cel_round(parent, k, held_out, learned), learned


@round_flow("cel-sft-round")
def sft_round(
    recipe: Recipe, layout: RunLayout, k: int, model: str, learned: str, parent: str, force: StageForcing
) -> tuple[str, dict[str, float] | None]:
    """Outcome-filtered SFT on the successful learning episodes, then the held-out layouts again.

    Too few successful steps to train on skips the round (reported, not an error).
    """
    rows = run_stage(
        cel_sft_rows,
        config={"code": source_digest(agent)},
        inputs={"learn": learned},
        link_as=layout.stage("cel-sft-rows", k),
        force=force,
        learn_dir=learned,
    )
    count = (read_manifest(Path(rows)) or {}).get("rows", 0)
    if count < recipe.cel.sft.min_examples:
        print(f"cel: {count} SFT rows from successful episodes, fewer than cel.sft.min_examples; no SFT round")
        return model, None
    rows_file = str(Path(rows) / TRAIN_ROWS_FILE)
    seed = derive_seed(recipe.seed, "train", k)
    policy = train(train_policy, recipe, layout.stage("policy", k), model, rows_file, recipe.train, seed, force)
    held_out = evaluate_held_out(recipe, layout, k, policy, learned, force)
    return policy, log_cel_round(parent, k, held_out)


def run_cel(recipe: Recipe, layout: RunLayout, parent: str, force: StageForcing) -> tuple[str, dict[int, dict]]:
    assert recipe.cel is not None
    policy = provision_model(recipe.model.ref)
    rounds: dict[int, dict] = {}
    if recipe.cel.baseline:
        rounds[0] = log_cel_round(parent, 0, evaluate_held_out(recipe, layout, 0, policy, None, force))
    rounds[1], learned = learning_round(recipe, layout, 1, policy, parent, force)
    if recipe.cel.sft.enabled:
        policy, metrics = sft_round(recipe, layout, 2, policy, learned, parent, force)
        if metrics is not None:
            rounds[2] = metrics
    knowledge = read_knowledge(learned)
    print(f"cel: learned rules ({len(knowledge.rules)} chars) and playbook ({len(knowledge.playbook)} chars) in {learned}")
    return policy, rounds


@flow(name="cel")
def cel_flow(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
        if config.method != "cel":
            raise ValueError(f"the cel flow got a {config.method} recipe")
        policy, rounds = run_cel(config, layout, parent_run_id, StageForcing(STAGES, from_stage))
        return run_result(config, layout, parent_run_id, rounds, policy)


FLOW = cel_flow
