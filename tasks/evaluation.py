"""Scoring and reporting stages."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from prefect import task

from pipeline_lib import tracking
from pipeline_lib.evaluation import (
    ITEMS_FILE,
    SCORES_FILE,
    family_figure,
    flat_metrics,
    read_metrics,
    score_samples,
)
from pipeline_lib.config import hash_json
from pipeline_lib.seft.report import revision_table, round_metrics, train_metrics
from pipeline_lib.seft.targets import TRAIN_ROWS_FILE
from pipeline_lib.store import build_stage, digest_path
from tasks.sampling import SAMPLES_FILE
from tasks.stage import running_stage, stage_task

SAMPLE_TABLE_ROWS = 200
TAG_OUTPUTS = "alignflow.outputs_digest"


@stage_task("score", tags=("cpu",))
def score(out_dir: str, key: str, force: bool, items_dir: str, samples_dir: str) -> str:
    def build(tmp: Path) -> dict:
        return score_samples(Path(items_dir), Path(samples_dir) / SAMPLES_FILE, tmp)

    return str(build_stage(Path(out_dir), running_stage(), key, build, force=force))


@task(name="log-round", retries=2, retry_delay_seconds=2, tags=["tracking"])
def log_round(
    parent_run_id: str,
    round_index: int,
    scores_dir: str,
    items_dir: str,
    round_dirs: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Log a round to its child run and, stepped by round, to the parent.

    Held-out metrics always; with ``round_dirs`` (a SEFT round's ``revise``,
    ``select`` and ``train`` outputs) also decision counts, accepted targets,
    train loss and the revision table. A rerun that reuses the same outputs
    finds the child it logged before and logs nothing again, so resuming
    never duplicates rows or points.
    """
    round_dirs = dict(round_dirs or {})
    summary = read_metrics(Path(scores_dir))
    metrics = {**flat_metrics(summary), **round_metrics(round_dirs)}
    outputs = [scores_dir] + [round_dirs[name] for name in sorted(round_dirs)]
    with round_child_run(parent_run_id, round_index, outputs, metrics) as run_id:
        if run_id is None:
            return metrics
        tracking.log_dataset(Path(items_dir) / ITEMS_FILE, name="suite-eval", context="eval", run_id=run_id)
        tracking.log_table(
            _sample_rows(Path(scores_dir) / SCORES_FILE), f"eval_samples_round{round_index}.json", run_id=run_id
        )
        tracking.log_artifact(Path(scores_dir) / "metrics.json", "eval", run_id=run_id)
        figure = family_figure(summary, f"held-out suite, round {round_index}")
        tracking.log_figure(figure, f"eval/families_round{round_index}.png", run_id=run_id)
        _log_round_outputs(round_index, round_dirs, run_id)
    return metrics


@contextmanager
def round_child_run(
    parent_run_id: str, round_index: int, outputs: list[str], metrics: Mapping[str, float | None]
) -> Iterator[str | None]:
    """The child run ``round-K`` with the round's metrics logged, to log the rest into; None when a
    run over these very outputs was logged before (a resumed run logs nothing twice)."""
    name, tags = f"round-{round_index}", {TAG_OUTPUTS: hash_json([digest_path(d) for d in outputs])}
    if tracking.find_child_run(parent_run_id, name, tags):
        yield None
        return
    with tracking.start_child_run(parent_run_id, name, step=round_index, tags=tags) as child:
        tracking.log_metrics(metrics, step=round_index, run_id=child.info.run_id)
        yield child.info.run_id
        # Inside the block: the child only ends FINISHED (and is skipped on a
        # rerun) once the parent has its point too.
        tracking.log_metrics(metrics, step=round_index, run_id=parent_run_id)


def _log_round_outputs(round_index: int, round_dirs: Mapping[str, str], run_id: str) -> None:
    if "select" in round_dirs:
        rows = revision_table(round_dirs["select"], SAMPLE_TABLE_ROWS)
        tracking.log_table(rows, f"revisions_round{round_index}.json", run_id=run_id)
        train_rows = Path(round_dirs["select"]) / TRAIN_ROWS_FILE
        tracking.log_dataset(train_rows, name=f"sft-targets-round{round_index}", context="train", run_id=run_id)
    if "train" in round_dirs:
        history = train_metrics(round_dirs["train"])["loss_history"]
        for point in history:
            tracking.log_metrics({"train/loss_curve": point["loss"]}, step=int(point["step"]), run_id=run_id)


def _sample_rows(scores_file: Path) -> list[dict]:
    import pyarrow.parquet as pq

    columns = ["prompt_id", "family", "difficulty", "prompt", "response", "reference", "score", "reasons"]
    return pq.read_table(scores_file, columns=columns).slice(0, SAMPLE_TABLE_ROWS).to_pylist()
