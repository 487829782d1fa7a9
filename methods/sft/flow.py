"""``method: sft`` and ``method: ift``: one round of fine-tuning on the reference answers (METHODS.md §7), or on
the user's ``data.sft`` conversations (loss on every assistant turn).

IFT trains on the very rows SFT does, with ``train.objective: ift``; a run of
one reuses the other's rows.
"""

from __future__ import annotations

from pathlib import Path

from methods.run import Rounds, method_flow, round_flow
from methods.sft import rows
from methods.shared import data_inputs, evaluate_round, one_round, train_round, training_prompts, user_data
from pipeline_lib.data.prepare import ROWS_FILE
from pipeline_lib.training import rows as training_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.stage import Input, stage


@stage("build-training-rows", code=(rows, training_rows), tags=("cpu",))
def sft_training_rows(tmp: Path, items: Input) -> dict:
    """The training prompts with their reference answers, as chat rows."""
    return rows.sft_rows(Path(items), tmp)


@stage("build-training-rows", code=(rows, training_rows), tags=("cpu",))
def sft_conversation_rows(tmp: Path, prepared: Input) -> dict:
    """The user's prepared ``data.sft`` conversations, as they are."""
    return rows.conversation_rows(Path(prepared) / ROWS_FILE, tmp)


@round_flow("method-round")
def supervised_round(ctx: RunContext, k: int, model: str) -> tuple[str, dict[str, float]]:
    """Round k: train ``model`` on ``data.sft`` or the reference answers; returns (new policy, its metrics)."""
    prepared = user_data(ctx, "sft")
    if prepared:
        data = ctx.run(sft_conversation_rows, k, prepared=prepared)
    else:
        data = ctx.run(sft_training_rows, k, items=training_prompts(ctx))
    policy = train_round(ctx, k, model, str(Path(data) / TRAIN_ROWS_FILE))
    return policy, evaluate_round(ctx, policy, k, trained=True, datasets=data_inputs("sft", prepared))


def run(ctx: RunContext) -> tuple[str, Rounds]:
    return one_round(ctx, supervised_round)


sft_flow = method_flow("sft", run)
ift_flow = method_flow("ift", run)
