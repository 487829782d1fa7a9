"""CEL stages: learning episodes (play, then reflect), held-out evaluation, and outcome-filtered SFT rows.

Episodes are the unit of resumption: each finished episode (with the
knowledge it left behind) is a file in the stage's ``.partial`` folder, so a
killed run replays only the episode it was in.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline_lib import agent, cel
from pipeline_lib.config import CelConfig, SamplerConfig
from pipeline_lib.method_rows import TRAIN_ROWS_FILE
from pipeline_lib.store import atomic_write_text
from tasks.stage import build_with_shards, running_stage, stage_task

TRAJECTORIES_FILE = "trajectories.jsonl"
KNOWLEDGE_FILE = "knowledge.json"
KNOWLEDGE_HISTORY_FILE = "knowledge.jsonl"
METRICS_FILE = "metrics.json"


class _LazySampler:
    """Start the model only when an episode is left to play: a resumed stage with every
    episode on disk loads nothing."""

    def __init__(self, stack: ExitStack, model_path: str, dtype: str, sampler: SamplerConfig) -> None:
        self._stack, self._model_path, self._dtype, self._config = stack, model_path, dtype, sampler
        self._parts: tuple[Any, Callable] | None = None

    def get(self) -> tuple[Any, Callable]:
        if self._parts is None:
            from pipeline_lib.models import load_tokenizer
            from pipeline_lib.sampling import make_sampler, render_chat

            tokenizer = load_tokenizer(self._model_path)
            sampler = self._stack.enter_context(make_sampler(self._config, self._model_path, dtype=self._dtype))
            self._parts = (sampler, lambda messages: render_chat(tokenizer, messages))
        return self._parts


def _episodes(
    shards: Path, seeds: list[int], force: bool, model: _LazySampler, play: Callable[..., dict]
) -> Iterator[dict]:
    """Each episode's record, in order: from its shard file, or ``play(sampler, render, index, seed)``
    written to one. The caller may change what the next ``play`` uses (the knowledge) in between."""
    if force:
        shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        shard = shards / f"episode-{index:04d}.json"
        played = not shard.exists()
        if played:
            atomic_write_text(shard, json.dumps(play(*model.get(), index, seed)))
        record = json.loads(shard.read_text())
        _progress(index, len(seeds), record, played)
        yield record


def _progress(index: int, total: int, record: dict, played: bool) -> None:
    """One line per episode on stderr: the console shows where a long stage is, and a resumed
    stage says which episodes it took from disk."""
    trajectory = record["trajectory"]
    how = "played" if played else "reused from disk"
    outcome = "success" if trajectory["success"] else "failure"
    print(
        f"{running_stage()}: episode {index + 1}/{total} {how}: {outcome} in {len(trajectory['steps'])} steps",
        file=sys.stderr,
        flush=True,
    )


def _write_outputs(tmp: Path, trajectories: list[agent.Trajectory], seeds: list[int]) -> dict:
    agent.write_trajectories(tmp / TRAJECTORIES_FILE, trajectories)
    episodes = [{"seed": s, **agent.episode_metrics(t)} for s, t in zip(seeds, trajectories, strict=True)]
    summary = agent.summarise(trajectories)
    atomic_write_text(tmp / METRICS_FILE, json.dumps({"summary": summary, "episodes": episodes}, indent=2))
    return {"summary": summary}


@stage_task("cel-learn", tags=("accelerator",))
def cel_learn(
    out_dir: str, key: str, force: bool, model_path: str, dtype: str, sampler: SamplerConfig, game: CelConfig, seed: int
) -> str:
    """Play the learning episodes in order, rewriting rules and playbook after each."""

    def build(tmp: Path, shards: Path) -> dict:
        seeds = cel.learning_seeds(game, seed)
        options = cel.agent_options(game, seed, evaluation=False)
        knowledge = cel.starting_knowledge(game)
        trajectories, history = [], []

        def play(sampler, render, index: int, episode_seed: int) -> dict:
            env = cel.make_game(game)
            trajectory = agent.play_episode(sampler, render, env, knowledge, options, episode_seed, index)
            learned, reflection = agent.reflect(sampler, render, knowledge, trajectory, options, index)
            return {"trajectory": trajectory.to_dict(), "knowledge": learned.to_dict(), "reflection": reflection.to_dict()}

        with ExitStack() as stack:
            model = _LazySampler(stack, model_path, dtype, sampler)
            for index, record in enumerate(_episodes(shards, seeds, force, model, play)):
                trajectories.append(agent.Trajectory.from_dict(record["trajectory"]))
                knowledge = agent.Knowledge.from_dict(record["knowledge"])
                history.append({"episode": index, **record["knowledge"], "reflection": record["reflection"]})
        atomic_write_text(tmp / KNOWLEDGE_FILE, json.dumps(knowledge.to_dict(), indent=2))
        atomic_write_text(tmp / KNOWLEDGE_HISTORY_FILE, "".join(json.dumps(h) + "\n" for h in history))
        return _write_outputs(tmp, trajectories, seeds)

    return build_with_shards(out_dir, running_stage(), key, build, force)


@stage_task("cel-evaluate", tags=("accelerator",))
def cel_evaluate(
    out_dir: str,
    key: str,
    force: bool,
    model_path: str,
    dtype: str,
    sampler: SamplerConfig,
    game: CelConfig,
    seed: int,
    knowledge_dir: str | None,
) -> str:
    """Play the held-out layouts with frozen knowledge: the learned one, or the starting one."""

    def build(tmp: Path, shards: Path) -> dict:
        seeds = cel.held_out_seeds(game, seed)
        options = cel.agent_options(game, seed, evaluation=True)
        knowledge = read_knowledge(knowledge_dir) if knowledge_dir else cel.starting_knowledge(game)

        def play(sampler, render, index: int, episode_seed: int) -> dict:
            env = cel.make_game(game)
            return {"trajectory": agent.play_episode(sampler, render, env, knowledge, options, episode_seed, index).to_dict()}

        with ExitStack() as stack:
            model = _LazySampler(stack, model_path, dtype, sampler)
            records = list(_episodes(shards, seeds, force, model, play))
        trajectories = [agent.Trajectory.from_dict(r["trajectory"]) for r in records]
        atomic_write_text(tmp / KNOWLEDGE_FILE, json.dumps(knowledge.to_dict(), indent=2))
        return _write_outputs(tmp, trajectories, seeds)

    return build_with_shards(out_dir, running_stage(), key, build, force)


@stage_task("cel-sft-rows", tags=("cpu",))
def cel_sft_rows(out_dir: str, key: str, force: bool, learn_dir: str) -> str:
    """Outcome-filtered SFT rows: every valid step of the learning episodes that succeeded."""
    import pyarrow as pa

    from pipeline_lib.store import atomic_write_parquet, build_stage

    def build(tmp: Path) -> dict:
        trajectories = agent.read_trajectories(Path(learn_dir) / TRAJECTORIES_FILE)
        rows = agent.sft_rows(trajectories)
        atomic_write_parquet(pa.Table.from_pylist(rows), tmp / TRAIN_ROWS_FILE)
        return {"rows": len(rows), "successful_episodes": sum(t.success for t in trajectories)}

    return str(build_stage(Path(out_dir), running_stage(), key, build, force=force))


def read_knowledge(stage_dir: str | Path) -> agent.Knowledge:
    return agent.Knowledge.from_dict(json.loads((Path(stage_dir) / KNOWLEDGE_FILE).read_text()))


def read_metrics(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / METRICS_FILE).read_text())
