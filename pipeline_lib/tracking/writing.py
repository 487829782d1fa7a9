"""Which run a helper writes to, and batched writes within MLflow's limits."""

from collections.abc import Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH


def resolve_run_id(run_id: str | None) -> str:
    """``run_id`` itself, else the run active in this thread."""
    if run_id is not None:
        return run_id
    active = mlflow.active_run()
    if active is None:
        # MLflow's active run is per thread: a Prefect task in a worker thread
        # does not see the run its flow started.
        raise RuntimeError("no MLflow run is active in this thread; pass run_id explicitly")
    return active.info.run_id


def log_batches(run_id: str, params: Sequence[Param] = (), metrics: Sequence[Metric] = ()) -> None:
    """One request per MLflow batch limit: the server refuses larger batches whole."""
    client = MlflowClient()
    for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
