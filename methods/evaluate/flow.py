"""``method: evaluate``: prepare-suite -> generate-answers -> score on the starting model, logged as round 0."""

from __future__ import annotations

from methods.run import method_flow
from methods.shared import evaluate_round, starting_model
from tasks.context import RunContext


def run(ctx: RunContext) -> tuple[None, dict[int, dict[str, float]]]:
    return None, {0: evaluate_round(ctx, starting_model(ctx), 0)}


evaluate_flow = method_flow("evaluate", run)
