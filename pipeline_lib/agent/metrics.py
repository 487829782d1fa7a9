"""Per-episode and summary metrics: success, steps, invalid actions, world-model accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean
from typing import Any

from pipeline_lib.agent.trajectory import Trajectory


def world_model_accuracy(trajectories: Sequence[Trajectory]) -> float | None:
    """Exact next-grid matches over the steps whose taken action had a prediction; None without any."""
    judged = [s.world_model_match for t in trajectories for s in t.steps if s.world_model_match is not None]
    return sum(judged) / len(judged) if judged else None


def _invalid_rate(trajectories: Sequence[Trajectory]) -> float | None:
    steps = [s for t in trajectories for s in t.steps]
    return sum(not s.valid for s in steps) / len(steps) if steps else None


def episode_metrics(trajectory: Trajectory) -> dict[str, Any]:
    steps = len(trajectory.steps)
    return {
        "success": int(trajectory.success),
        "steps": steps,
        "steps_to_success": steps if trajectory.success else None,
        "invalid_rate": _invalid_rate([trajectory]),
        "world_model_accuracy": world_model_accuracy([trajectory]),
        "reward": trajectory.reward,
    }


def summarise(trajectories: Sequence[Trajectory]) -> dict[str, Any]:
    """Means over episodes; invalid rate and world-model accuracy pool all steps."""
    won = [len(t.steps) for t in trajectories if t.success]
    return {
        "episodes": len(trajectories),
        "success_rate": fmean(t.success for t in trajectories) if trajectories else None,
        "mean_steps": fmean(len(t.steps) for t in trajectories) if trajectories else None,
        "mean_steps_to_success": fmean(won) if won else None,
        "invalid_rate": _invalid_rate(trajectories),
        "world_model_accuracy": world_model_accuracy(trajectories),
        "mean_reward": fmean(t.reward for t in trajectories) if trajectories else None,
    }
