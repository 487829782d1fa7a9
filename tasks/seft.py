"""SEFT's own stages: reviser data, revising the policy's samples, choosing each round's targets."""

import json
from pathlib import Path

from prefect import task

from pipeline_lib import tracking
from pipeline_lib.config import ReviserConfig, SamplerConfig, hash_json
from pipeline_lib.evaluation import SCORES_FILE, rounds_figure
from pipeline_lib.seft.report import train_metrics
from pipeline_lib.seft.reviser_data import ADAPTIVE_FILE, WARMUP_FILE
from pipeline_lib.seft.reviser_data import build_reviser_data as build_data
from pipeline_lib.seft.revise import REVISIONS_FILE, revise_samples
from pipeline_lib.seft.targets import select_targets as select
from pipeline_lib.store import build_stage, digest_path, read_manifest
from tasks.evaluation import TAG_OUTPUTS
from tasks.sampling import SAMPLES_FILE
from tasks.stage import build_with_shards, stage_task


@stage_task("build-reviser-data", tags=("cpu",))
def build_reviser_data(
    out_dir: str, key: str, force: bool, scores_dir: str | None, reviser: ReviserConfig, seed: int
) -> str:
    def build(tmp: Path) -> dict:
        scores_file = Path(scores_dir) / SCORES_FILE if scores_dir else None
        return build_data(scores_file, reviser, seed, tmp)

    return str(build_stage(Path(out_dir), "build-reviser-data", key, build, force=force))


@stage_task("revise", tags=("accelerator",))
def revise(
    out_dir: str,
    key: str,
    force: bool,
    items_dir: str,
    samples_dir: str,
    reviser_path: str,
    dtype: str,
    sampler: SamplerConfig,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> str:
    def build(tmp: Path, shards: Path) -> dict:
        return revise_samples(
            Path(items_dir),
            Path(samples_dir) / SAMPLES_FILE,
            Path(reviser_path),
            dtype,
            sampler,
            max_new_tokens,
            batch_size,
            seed,
            tmp,
            shards,
        )

    return build_with_shards(out_dir, "revise", key, build, force)


@stage_task("select-targets", tags=("cpu",))
def select_targets(out_dir: str, key: str, force: bool, items_dir: str, revisions_dir: str, accepted: list[str]) -> str:
    def build(tmp: Path) -> dict:
        return select(Path(items_dir), Path(revisions_dir) / REVISIONS_FILE, accepted, tmp)

    return str(build_stage(Path(out_dir), "select-targets", key, build, force=force))


@task(name="log-reviser", retries=2, retry_delay_seconds=2, tags=["tracking"])
def log_reviser(parent_run_id: str, data_dir: str, warmup_dir: str, reviser_dir: str) -> None:
    """The reviser's data counts, datasets and losses, as the parent's ``reviser`` child run (logged once)."""
    data = read_manifest(Path(data_dir)) or {}
    name = "reviser"
    tags = {TAG_OUTPUTS: hash_json([digest_path(d) for d in (data_dir, warmup_dir, reviser_dir)])}
    if tracking.find_child_run(parent_run_id, name, tags):
        return
    metrics = {
        "reviser/warmup_loss": train_metrics(warmup_dir)["train_loss"],
        "reviser/train_loss": train_metrics(reviser_dir)["train_loss"],
        "reviser/warmup_rows": data["warmup_rows"],
        "reviser/adaptive_rows": data["adaptive_rows"],
        **{f"reviser/data/{decision}": count for decision, count in data["decisions"].items()},
    }
    with tracking.start_child_run(parent_run_id, name, tags=tags) as child:
        run_id = child.info.run_id
        tracking.log_metrics(metrics, run_id=run_id)
        tracking.log_text(json.dumps(data, indent=2), "reviser/data_report.json", run_id=run_id)
        for file, context in ((WARMUP_FILE, "reviser-warmup"), (ADAPTIVE_FILE, "reviser-adaptive")):
            tracking.log_dataset(Path(data_dir) / file, name=context, context="train", run_id=run_id)
        tracking.log_metrics(metrics, run_id=parent_run_id)


@task(name="log-score-by-round", retries=2, retry_delay_seconds=2, tags=["tracking"])
def log_score_by_round(parent_run_id: str, rounds: dict[int, dict[str, float]]) -> None:
    figure = rounds_figure(rounds, "held-out suite by round")
    tracking.log_figure(figure, "eval/score_by_round.png", run_id=parent_run_id)
