"""Outcome-filtered SFT rows: the valid steps of won episodes, answered in the clean canonical format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline_lib.agent.prompts import decision_messages
from pipeline_lib.agent.trajectory import StepRecord, Trajectory

# Every state of a won episode led to a win, so its canonical value is High.
WON_VALUE = "High"


def canonical_response(step: StepRecord, predict_next: bool) -> str:
    """The answer the format asks for, with the true next grid as the prediction for the action taken."""
    lines = [f"VALUE: {WON_VALUE}"]
    if predict_next:
        lines += [f"PREDICT {step.action}:", step.next_observation.strip("\n")]
    lines.append(f"ACTION: {step.action}")
    return "\n".join(lines)


def winning_step_rows(trajectories: Iterable[Trajectory]) -> list[dict[str, Any]]:
    """``{"prompt": chat messages, "completion": text}`` rows, as the SFT trainer reads them.

    The prompt is the decision prompt the step was played with, rebuilt from
    the trajectory's context and earlier steps; the trainer renders it with the
    chat template and the completion as the assistant's turn.
    """
    rows = []
    for trajectory in trajectories:
        if not trajectory.success or trajectory.context is None:
            continue
        for index, step in enumerate(trajectory.steps):
            if not step.valid or step.action is None:
                continue
            earlier = trajectory.steps[:index]
            prompt = decision_messages(trajectory.context, step.observation, step.legal_actions, earlier)
            completion = canonical_response(step, trajectory.context.predict_next)
            rows.append({"prompt": prompt, "completion": completion})
    return rows
