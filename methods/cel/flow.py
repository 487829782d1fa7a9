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
from typing import Any

from prefect import task

from methods.cel import episodes, report
from methods.cel.config import CelConfig
from methods.cel.episodes import KNOWLEDGE_FILE, LazySampler, read_knowledge
from methods.cel.play import held_out_seeds
from methods.run import Rounds, method_flow, round_flow
from methods.shared import starting_model, train_round
from pipeline_lib import agent
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store import read_manifest
from pipeline_lib.tracking.rounds import round_child_run
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.limits import limited
from tasks.stage import Input, KeyedBy, Neutral, OptionalInput, stage

LEARN, EVALUATE = "cel-learn", "cel-evaluate"


def _learning_settings(cel: CelConfig) -> dict:
    # Settings only the held-out play (or the SFT round) reads: changing them keeps the learning episodes.
    return cel.model_dump(mode="json", exclude={"eval_episodes", "eval_temperature", "baseline", "sft"})


def _playing_settings(cel: CelConfig) -> dict:
    # Settings only learning (or the SFT round) reads: changing them keeps the held-out games.
    leave_out = {"learn_episodes", "temperature", "reflection_max_new_tokens", "trajectory_char_budget", "sft"}
    return cel.model_dump(mode="json", exclude=leave_out)


def _player(model: str, dtype: str, sampler: SamplerConfig, backend: str) -> LazySampler:
    return LazySampler(model, dtype, sampler.model_copy(update={"backend": backend}))


# v2 (both play stages): keyed by their parameters and this version instead of the agent and games code's
# digest, so moving code no longer replays every episode; bumped deliberately (CHANGELOG.md). No sampler
# setting is keyed: the agent sets its own sampling (temperature from the cel section, top_p 1).
@stage(LEARN, version=2, scratch="partial", tags=("accelerator",))
def cel_learn(
    tmp: Path,
    scratch: Path,
    model: Input,
    cel: KeyedBy(CelConfig, _learning_settings),
    seed: int,
    backend: str,
    dtype: str,
    sampler: Neutral(SamplerConfig),
) -> dict:
    """Play the learning episodes in order, rewriting rules and playbook after each; ``sampler`` says how to
    reach ``backend``."""
    return episodes.learn(tmp, scratch, _player(model, dtype, sampler, backend), cel, seed, LEARN)


@stage(EVALUATE, version=2, scratch="partial", tags=("accelerator",))
def cel_evaluate(
    tmp: Path,
    scratch: Path,
    model: Input,
    knowledge: OptionalInput,
    cel: KeyedBy(CelConfig, _playing_settings),
    seed: int,
    layouts: list[int],
    backend: str,
    dtype: str,
    sampler: Neutral(SamplerConfig),
) -> dict:
    """Play the held-out ``layouts`` with frozen knowledge: the ``knowledge`` file, or the starting one."""
    player = _player(model, dtype, sampler, backend)
    return episodes.play_held_out(tmp, scratch, player, cel, seed, layouts, knowledge, EVALUATE)


@stage("cel-sft-rows", code=(agent,), tags=("cpu",))
def cel_sft_rows(tmp: Path, learn: Input) -> dict:
    """Outcome-filtered SFT rows: every valid step of the learning episodes (``learn``) that succeeded."""
    return episodes.write_sft_rows(Path(learn), tmp)


def _play(ctx: RunContext) -> dict[str, Any]:
    """What every play stage reads besides the model and its cel settings."""
    return {
        "seed": ctx.recipe.seed, "backend": ctx.backend, "dtype": ctx.dtype, "sampler": ctx.sampler,
    }  # fmt: skip


def held_out(ctx: RunContext, k: int, model: str, learned: str | None) -> str:
    """The held-out layouts played by ``model`` with what ``learned`` taught (None: the starting knowledge)."""
    cel = ctx.recipe.cel
    knowledge = str(Path(learned) / KNOWLEDGE_FILE) if learned else None
    # The layouts themselves, not learn_episodes: held-out seeds skip the learning levels.
    layouts = held_out_seeds(cel, ctx.recipe.seed)
    return ctx.run(cel_evaluate, k, model=model, knowledge=knowledge, cel=cel, layouts=layouts, **_play(ctx))


@limited("tracking")
@task(name="log-cel-round", retries=2, retry_delay_seconds=2)
def log_cel_round(
    parent_run_id: str, round_index: int, eval_dir: str, learn_dir: str | None = None, trained: str | None = None
) -> dict:
    """Log round ``round_index`` to its child run ``round-K`` and, stepped by round, to the parent;
    ``trained``: the SFT round's policy, logged as the round's LoggedModel.

    Like every round logger, a rerun over the same outputs finds the child it
    logged and logs nothing twice.
    """
    metrics = report.round_metrics(eval_dir, learn_dir)
    outputs = [d for d in (eval_dir, learn_dir) if d]
    with round_child_run(parent_run_id, round_index, outputs, metrics, trained) as run_id:
        if run_id is not None:
            report.log_held_out(eval_dir, round_index, run_id)
            if learn_dir:
                report.log_learning(learn_dir, run_id)
    return metrics


@round_flow("cel-learning-round")
def learning_round(ctx: RunContext, k: int, model: str) -> tuple[dict[str, float], str]:
    """Learning episodes, then the held-out layouts with what they taught; returns (metrics, learning output)."""
    learned = ctx.run(cel_learn, k, model=model, cel=ctx.recipe.cel, **_play(ctx))
    return log_cel_round(ctx.parent, k, held_out(ctx, k, model, learned), learned), learned


@round_flow("cel-sft-round")
def sft_round(ctx: RunContext, k: int, model: str, learned: str) -> tuple[str, dict[str, float] | None]:
    """Outcome-filtered SFT on the successful learning episodes, then the held-out layouts again.

    Too few successful steps to train on skips the round (reported, not an error).
    """
    rows = ctx.run(cel_sft_rows, k, learn=learned)
    count = (read_manifest(Path(rows)) or {}).get("rows", 0)
    if count < ctx.recipe.cel.sft.min_examples:
        print(f"cel: {count} SFT rows from successful episodes, fewer than cel.sft.min_examples; no SFT round")
        return model, None
    policy = train_round(ctx, k, model, str(Path(rows) / TRAIN_ROWS_FILE))
    return policy, log_cel_round(ctx.parent, k, held_out(ctx, k, policy, learned), trained=policy)


def run(ctx: RunContext) -> tuple[str, Rounds]:
    """The zero-shot baseline, the learning round, the optional SFT round; returns (policy, metrics per round)."""
    cel = ctx.recipe.cel
    policy = starting_model(ctx)
    rounds: Rounds = {}
    if cel.baseline:
        rounds[0] = log_cel_round(ctx.parent, 0, held_out(ctx, 0, policy, None))
    rounds[1], learned = learning_round(ctx, 1, policy)
    if cel.sft.enabled:
        policy, metrics = sft_round(ctx, 2, policy, learned)
        if metrics is not None:
            rounds[2] = metrics
    knowledge = read_knowledge(Path(learned) / KNOWLEDGE_FILE)
    print(f"cel: learned rules ({len(knowledge.rules)} chars) and playbook ({len(knowledge.playbook)} chars) in {learned}")
    return policy, rounds


cel_flow = method_flow("cel", run)
