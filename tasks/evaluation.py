"""Scoring, and what every round logs to MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prefect import task

from pipeline_lib import suite as suite_package
from pipeline_lib import tracking
from pipeline_lib.reporting.figures import benchmark_figures, family_figure, rounds_figure
from pipeline_lib.suite.files import ITEMS_FILE
from pipeline_lib.suite.scoring import METRICS_FILE, SCORES_FILE, flat_metrics, read_metrics, score_samples
from pipeline_lib.tracking.lineage import register_final_model
from pipeline_lib.tracking.rounds import round_child_run
from pipeline_lib.training.report import train_metrics, training_round_metrics
from tasks.limits import limited
from tasks.sampling import SAMPLES_FILE
from tasks.stage import Input, stage

SAMPLE_TABLE_ROWS = 200


@stage("score", code=(suite_package,), tags=("cpu",))
def score(tmp: Path, items: Input, samples: Input) -> dict:
    """Verify sampled answers against their suite items."""
    return score_samples(Path(items), Path(samples) / SAMPLES_FILE, tmp)


# Verifying the policy's own samples (DPO's pairs, the reviser's graded data); held-out scores keep the name above.
score_samples_stage = score.named("score-samples")


@limited("tracking")
@task(name="log-round", retries=2, retry_delay_seconds=2)
def log_round(
    parent_run_id: str,
    round_index: int,
    scores_dir: str,
    items_dir: str,
    trained: str | None = None,
    outputs: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    tables: Mapping[str, list[dict]] | None = None,
    datasets: Mapping[str, str] | None = None,
    artifacts: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Log a round to its child run and, stepped by round, to the parent.

    Held-out metrics always; with ``trained`` (the round's new model) its
    training metrics and loss curve, and the model as an MLflow LoggedModel
    with the round's metrics linked; ``outputs``, ``metrics``, ``tables`` and
    ``datasets`` are what the method adds (SEFT: its revisions and targets);
    ``artifacts`` are files to attach, by the artifact folder they go in
    (lm-eval's results).
    A rerun that reuses the same outputs finds the child it logged before and
    logs nothing again, so resuming never duplicates rows or points.
    """
    summary = read_metrics(Path(scores_dir))
    metrics = {**flat_metrics(summary), **(training_round_metrics(trained) if trained else {}), **(metrics or {})}
    # In this order (the scores, then the outputs by name), as every earlier version tagged its rounds.
    named = {**(outputs or {}), **({"train": trained} if trained else {})}
    logged = [scores_dir, *(named[n] for n in sorted(named))]
    with round_child_run(parent_run_id, round_index, logged, metrics, trained) as run_id:
        if run_id is None:
            return metrics
        tracking.log_dataset(Path(items_dir) / ITEMS_FILE, name="suite-eval", context="eval", run_id=run_id)
        tracking.log_table(_sample_rows(Path(scores_dir) / SCORES_FILE), f"eval_samples_round{round_index}.json", run_id=run_id)
        tracking.log_artifact(Path(scores_dir) / METRICS_FILE, "eval", run_id=run_id)
        figure = family_figure(summary, f"held-out suite, round {round_index}")
        tracking.log_figure(figure, f"eval/families_round{round_index}.png", run_id=run_id)
        for name, rows in (tables or {}).items():
            tracking.log_table(rows, name, run_id=run_id)
        for path, folder in (artifacts or {}).items():
            tracking.log_artifact(path, folder, run_id=run_id)
        for name, rows_file in (datasets or {}).items():
            tracking.log_dataset(Path(rows_file), name=name, context="train", run_id=run_id)
        if trained:
            for point in train_metrics(trained)["loss_history"]:
                tracking.log_metrics({"train/loss_curve": point["loss"]}, step=int(point["step"]), run_id=run_id)
    return metrics


@limited("tracking")
@task(name="log-registered-model", retries=2, retry_delay_seconds=2)
def register_model(parent_run_id: str, final_model: str, name: str) -> str | None:
    """Register the run's final model under the recipe's name (once per stage key); ``models:/NAME/V`` or None."""
    version = register_final_model(parent_run_id, final_model, name)
    return f"models:/{version.name}/{version.version}" if version else None


@limited("tracking")
@task(name="log-score-by-round", retries=2, retry_delay_seconds=2)
def log_score_by_round(parent_run_id: str, rounds: dict[int, dict[str, float]]) -> None:
    figure = rounds_figure(rounds, "held-out suite by round")
    tracking.log_figure(figure, "eval/score_by_round.png", run_id=parent_run_id)


@limited("tracking")
@task(name="log-benchmarks-by-round", retries=2, retry_delay_seconds=2)
def log_benchmarks_by_round(parent_run_id: str, rounds: dict[int, dict[str, float]]) -> None:
    """A plot per benchmark of ``eval.benchmarks`` by round, on the run."""
    for prefix, figure in benchmark_figures(rounds).items():
        tracking.log_figure(figure, f"benchmarks/{prefix}_by_round.png", run_id=parent_run_id)


def _sample_rows(scores_file: Path) -> list[dict]:
    import pyarrow.parquet as pq

    columns = ["prompt_id", "family", "difficulty", "prompt", "response", "reference", "score", "reasons"]
    return pq.read_table(scores_file, columns=columns).slice(0, SAMPLE_TABLE_ROWS).to_pylist()
