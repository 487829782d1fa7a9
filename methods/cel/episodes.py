"""CEL's phases as episodes: learning (play, then reflect), held-out play with frozen knowledge, and SFT rows.

Episodes are the unit of resumption: each finished episode (with the
knowledge it left behind) is a file in the stage's scratch folder, so a
killed run replays only the episode it was in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from methods.cel.config import CelConfig
from methods.cel.play import agent_options, learning_seeds, make_game, starting_knowledge
from pipeline_lib import agent
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store import atomic_write_text
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, write_rows

TRAJECTORIES_FILE = "trajectories.jsonl"
KNOWLEDGE_FILE = "knowledge.json"
KNOWLEDGE_HISTORY_FILE = "knowledge.jsonl"
EPISODES_FILE = "metrics.json"

# play(sampler, render, index, seed) -> the episode's record
Play = Callable[[Any, Callable, int, int], dict]


class LazySampler:
    """The model that plays, started only when an episode is left to play: a resumed stage with every
    episode on disk loads nothing. A context manager: leaving it stops what it started."""

    def __init__(self, model_path: str, dtype: str, sampler: SamplerConfig) -> None:
        self._model_path, self._dtype, self._config = model_path, dtype, sampler
        self._stack = ExitStack()
        self._parts: tuple[Any, Callable] | None = None

    def __enter__(self) -> LazySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def get(self) -> tuple[Any, Callable]:
        if self._parts is None:
            from pipeline_lib.models import load_tokenizer
            from pipeline_lib.sampling import make_sampler, render_chat

            tokenizer = load_tokenizer(self._model_path)
            sampler = self._stack.enter_context(make_sampler(self._config, self._model_path, dtype=self._dtype))
            self._parts = (sampler, lambda messages: render_chat(tokenizer, messages))
        return self._parts


def episodes(shards: Path, seeds: list[int], model: LazySampler, play: Play, label: str) -> Iterator[dict]:
    """Each episode's record, in order: from its shard file, or ``play`` written to one. The caller may
    change what the next ``play`` uses (the knowledge) in between. ``label`` names the stage in progress lines."""
    shards.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        shard = shards / f"episode-{index:04d}.json"
        played = not shard.exists()
        if played:
            atomic_write_text(shard, json.dumps(play(*model.get(), index, seed)))
        record = json.loads(shard.read_text())
        _progress(label, index, len(seeds), record, played)
        yield record


def _progress(label: str, index: int, total: int, record: dict, played: bool) -> None:
    """One line per episode on stderr: the console shows where a long stage is, and a resumed
    stage says which episodes it took from disk."""
    trajectory = record["trajectory"]
    how = "played" if played else "reused from disk"
    outcome = "success" if trajectory["success"] else "failure"
    print(
        f"{label}: episode {index + 1}/{total} {how}: {outcome} in {len(trajectory['steps'])} steps",
        file=sys.stderr,
        flush=True,
    )


def learn(tmp: Path, shards: Path, model: LazySampler, cel: CelConfig, seed: int, label: str) -> dict:
    """Play the learning episodes in order, rewriting rules and playbook after each; write them to ``tmp``."""
    seeds = learning_seeds(cel, seed)
    options = agent_options(cel, seed, evaluation=False)
    knowledge = starting_knowledge(cel)
    trajectories, history = [], []

    def play(sampler, render, index: int, episode_seed: int) -> dict:
        trajectory = agent.play_episode(sampler, render, make_game(cel), knowledge, options, episode_seed, index)
        learned, reflection = agent.reflect(sampler, render, knowledge, trajectory, options, index)
        return {"trajectory": trajectory.to_dict(), "knowledge": learned.to_dict(), "reflection": reflection.to_dict()}

    with model:
        for index, record in enumerate(episodes(shards, seeds, model, play, label)):
            trajectories.append(agent.Trajectory.from_dict(record["trajectory"]))
            knowledge = agent.Knowledge.from_dict(record["knowledge"])
            history.append({"episode": index, **record["knowledge"], "reflection": record["reflection"]})
    atomic_write_text(tmp / KNOWLEDGE_FILE, json.dumps(knowledge.to_dict(), indent=2))
    atomic_write_text(tmp / KNOWLEDGE_HISTORY_FILE, "".join(json.dumps(h) + "\n" for h in history))
    return _write_outputs(tmp, trajectories, seeds)


def play_held_out(
    tmp: Path,
    shards: Path,
    model: LazySampler,
    cel: CelConfig,
    seed: int,
    layouts: list[int],
    knowledge: str | None,
    label: str,
) -> dict:
    """Play the held-out ``layouts`` (their seeds) with frozen knowledge: the ``knowledge`` file, or the
    starting one."""
    options = agent_options(cel, seed, evaluation=True)
    frozen = read_knowledge(knowledge) if knowledge else starting_knowledge(cel)

    def play(sampler, render, index: int, episode_seed: int) -> dict:
        trajectory = agent.play_episode(sampler, render, make_game(cel), frozen, options, episode_seed, index)
        return {"trajectory": trajectory.to_dict()}

    with model:
        records = list(episodes(shards, layouts, model, play, label))
    trajectories = [agent.Trajectory.from_dict(r["trajectory"]) for r in records]
    atomic_write_text(tmp / KNOWLEDGE_FILE, json.dumps(frozen.to_dict(), indent=2))
    return _write_outputs(tmp, trajectories, layouts)


def _write_outputs(tmp: Path, trajectories: list[agent.Trajectory], seeds: list[int]) -> dict:
    agent.write_trajectories(tmp / TRAJECTORIES_FILE, trajectories)
    episode_rows = [{"seed": s, **agent.episode_metrics(t)} for s, t in zip(seeds, trajectories, strict=True)]
    summary = agent.summarise(trajectories)
    atomic_write_text(tmp / EPISODES_FILE, json.dumps({"summary": summary, "episodes": episode_rows}, indent=2))
    return {"summary": summary}


def write_sft_rows(learned: Path, tmp: Path) -> dict:
    """Outcome-filtered SFT rows: every valid step of the learning episodes that succeeded."""
    trajectories = agent.read_trajectories(learned / TRAJECTORIES_FILE)
    rows = agent.winning_step_rows(trajectories)
    write_rows(rows, tmp / TRAIN_ROWS_FILE)
    return {"rows": len(rows), "successful_episodes": sum(t.success for t in trajectories)}


def read_knowledge(path: str | Path) -> agent.Knowledge:
    """The knowledge in a ``KNOWLEDGE_FILE``."""
    return agent.Knowledge.from_dict(json.loads(Path(path).read_text()))


def read_episode_metrics(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / EPISODES_FILE).read_text())
