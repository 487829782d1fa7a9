"""What happened in an episode, step by step, and its JSON Lines files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline_lib.agent.knowledge import PromptContext
from pipeline_lib.core.errors import UserError
from pipeline_lib.store import atomic_write_text


@dataclass(frozen=True)
class StepRecord:
    """One step: what the agent saw, what the model wrote, what it did and what the game answered."""

    step: int
    observation: str  # the grid before the action
    legal_actions: list[str]
    responses: list[str]  # the model's raw texts, in call order (empty for a scripted agent)
    value: str | None
    predictions: dict[str, str]  # action -> predicted next grid
    action: str | None  # the legal action taken; None when the answer was invalid
    raw_action: str  # what was sent to the game
    valid: bool
    error: str | None  # why the answer was invalid
    feedback: str
    reward: float
    next_observation: str
    world_model_match: bool | None  # predicted grid for the taken action == actual; None without a prediction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**data)


@dataclass(frozen=True)
class Trajectory:
    game: str
    seed: int
    episode_index: int
    layout_key: str
    max_steps: int
    player: str  # "single", "lookahead" or "scripted"
    # What the decision prompts were built from (a scripted agent's: empty knowledge, default options),
    # so that any step's prompt can be rebuilt; None only for trajectories made elsewhere.
    context: PromptContext | None
    steps: list[StepRecord] = field(default_factory=list)
    success: bool = False
    reward: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["context"] = None if self.context is None else self.context.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        context = data.get("context")
        return cls(
            **{k: v for k, v in data.items() if k not in ("steps", "context")},
            context=None if context is None else PromptContext.from_dict(context),
            steps=[StepRecord.from_dict(s) for s in data.get("steps", [])],
        )


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    """One JSON object per line; readers see the old file or the complete new one."""
    atomic_write_text(Path(path), "".join(json.dumps(t.to_dict()) + "\n" for t in trajectories))


def read_trajectories(path: str | Path) -> list[Trajectory]:
    trajectories = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            trajectories.append(Trajectory.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError) as error:
            raise UserError(f"{path} line {number} is not a trajectory: {error}") from None
    return trajectories


def trajectories_table(trajectories: Iterable[Trajectory]) -> list[dict[str, Any]]:
    """Flat per-step rows, one column type each, for an MLflow table."""
    return [
        {
            "episode": t.episode_index,
            "game": t.game,
            "seed": t.seed,
            "step": s.step,
            "action": s.action if s.action is not None else s.raw_action,
            "valid": s.valid,
            "feedback": s.feedback,
            "reward": float(s.reward),
            "value": s.value,
            "world_model_match": s.world_model_match,
        }
        for t in trajectories
        for s in t.steps
    ]
