"""``method: rft``: rejection-sampling fine-tuning, one round.

Sample ``sampler.n`` answers per training prompt, keep those the verifier
passes (``rft.min_score``, at most ``rft.max_per_prompt`` distinct ones per
prompt) and fine-tune on them with ``train.objective`` (sft or ift).
"""

from __future__ import annotations

from pathlib import Path

from methods.rft import rows
from methods.run import Rounds, method_flow, round_flow
from methods.shared import evaluate_round, one_round, policy_samples, sample_scores, train_round, training_prompts
from pipeline_lib.core.errors import UserError
from pipeline_lib.reporting.metrics import RFT_KEPT, RFT_PROMPTS_COVERED
from pipeline_lib.store import read_manifest
from pipeline_lib.suite.scoring import SCORES_FILE
from pipeline_lib.training import rows as training_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.context import RunContext
from tasks.stage import Input, stage


@stage("build-training-rows", code=(rows, training_rows), tags=("cpu",))
def rft_training_rows(tmp: Path, items: Input, scores: Input, min_score: float, max_per_prompt: int | None) -> dict:
    """The samples scoring at least ``min_score``, at most ``max_per_prompt`` distinct ones per prompt, as SFT rows."""
    return rows.rft_rows(Path(items), Path(scores) / SCORES_FILE, min_score, max_per_prompt, tmp)


def _require_kept(ctx: RunContext, kept: dict) -> None:
    """Stop before training on nothing, saying which settings let samples through."""
    if kept["rows"]:
        return
    raise UserError(
        f"rft kept no sample: none of the {kept['samples']} samples of {kept['prompts']} prompts scored at least "
        f"rft.min_score {ctx.recipe.rft.min_score} (best: {kept['best_score']}); sample more or more varied answers "
        f"(sampler.n {ctx.recipe.sampler.n}, sampler.temperature {ctx.recipe.sampler.temperature}) or lower rft.min_score"
    )


@round_flow("method-round")
def rft_round(ctx: RunContext, k: int, model: str) -> tuple[str, dict[str, float]]:
    """Round k: sample ``model``, keep what passes, train on it; returns (new policy, its metrics)."""
    items = training_prompts(ctx)
    samples = policy_samples(ctx, k, model, items, seed=ctx.seed("round", k))
    scores = sample_scores(ctx, k, items, samples)
    rft = ctx.recipe.rft
    data = ctx.run(
        rft_training_rows, k, items=items, scores=scores, min_score=rft.min_score, max_per_prompt=rft.max_per_prompt
    )
    kept = read_manifest(Path(data))
    _require_kept(ctx, kept)
    policy = train_round(ctx, k, model, str(Path(data) / TRAIN_ROWS_FILE))
    metrics = {RFT_KEPT: float(kept["rows"]), RFT_PROMPTS_COVERED: float(kept["prompts_covered"])}
    return policy, evaluate_round(ctx, policy, k, trained=True, metrics=metrics)


def run(ctx: RunContext) -> tuple[str, Rounds]:
    return one_round(ctx, rft_round)


rft_flow = method_flow("rft", run)
