"""Parent runs (one per pipeline run) and their children (one per round or stage)."""

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow import ActiveRun, MlflowClient
from mlflow.entities import LifecycleStage, Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from pipeline_lib import __version__
from pipeline_lib.core.errors import UserError
from pipeline_lib.tracking.params import log_config
from pipeline_lib.tracking.store import experiment_id_of
from pipeline_lib.tracking.writing import resolve_run_id

TAG_CONFIG_HASH = "alignflow.config_hash"
TAG_RUN_DIR = "alignflow.run_dir"  # the pipeline run's folder, runs/<recipe>-<hash>
TAG_KIND = "alignflow.kind"
TAG_ROUND = "alignflow.round"
TAG_VERSION = "alignflow.version"
KIND_PIPELINE = "pipeline"

_SEARCH_PAGE = 200


@contextmanager
def start_pipeline_run(
    experiment: str,
    run_name: str,
    config: Mapping[str, Any],
    config_hash: str,
    tags: Mapping[str, str] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[ActiveRun]:
    """Open the parent run of a pipeline run, active in this thread.

    A new run gets the config as params and as ``config.yaml``. With
    ``resume_run_id`` the existing run is reopened instead (it must belong to
    ``experiment`` and carry the same config hash) and keeps what it has.
    The run ends FINISHED, or FAILED if the block raises (the error propagates).
    """
    experiment_id = experiment_id_of(experiment)
    if resume_run_id is not None:
        _check_resumable(resume_run_id, experiment, experiment_id, config_hash)
        with mlflow.start_run(run_id=resume_run_id) as run:
            yield run
        return
    run_tags = {
        **(tags or {}),
        TAG_CONFIG_HASH: config_hash,
        TAG_KIND: KIND_PIPELINE,
        TAG_VERSION: __version__,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        log_config(config, run.info.run_id)
        yield run


@contextmanager
def start_child_run(
    parent_run_id: str,
    name: str,
    step: int | None = None,
    tags: Mapping[str, str] | None = None,
    kind: str = "round",
) -> Iterator[Run]:
    """Open a child of ``parent_run_id`` (a round, a stage with ``kind="stage"``, a compared method...).

    Made through the client, not the fluent API, so that it works from any
    thread and under any active run (a comparison's rounds are children of
    its method runs, not of the active parent). The child ends FINISHED, or
    FAILED if the block raises. It names the parent's source (the alignflow
    command): the client sets none, and the UI would show an empty one.
    """
    parent = _get_run(parent_run_id)
    source = {key: parent.data.tags[key] for key in (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE) if key in parent.data.tags}
    run_tags = {**source, **(tags or {}), TAG_KIND: kind, "mlflow.parentRunId": parent_run_id}
    if step is not None:
        run_tags[TAG_ROUND] = str(step)
    client = MlflowClient()
    run = client.create_run(parent.info.experiment_id, run_name=name, tags=run_tags)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def find_run(experiment: str, config_hash: str, tags: Mapping[str, str] | None = None) -> str | None:
    """The latest pipeline run of ``experiment`` with this config hash and these tags."""
    if not re.fullmatch(r"[\w.\-]+", config_hash):
        raise ValueError(f"config hash {config_hash!r} is not a plain token")
    experiment_id = experiment_id_of(experiment)
    client = MlflowClient()
    wanted = dict(tags or {})
    query = f"tags.`{TAG_CONFIG_HASH}` = '{config_hash}' and tags.`{TAG_KIND}` = '{KIND_PIPELINE}'"
    page_token = None
    while True:
        # Extra tags are compared here, not in the query, so that any value
        # (quotes included) works without escaping rules.
        page = client.search_runs(
            [experiment_id],
            filter_string=query,
            order_by=["attributes.start_time DESC"],
            max_results=_SEARCH_PAGE,
            page_token=page_token,
        )
        for run in page:
            if all(run.data.tags.get(key) == value for key, value in wanted.items()):
                return run.info.run_id
        page_token = page.token
        if not page_token:
            return None


def _check_resumable(run_id: str, experiment: str, experiment_id: str, config_hash: str) -> None:
    run = _get_run(run_id)
    if run.info.lifecycle_stage == LifecycleStage.DELETED:
        raise UserError(f"MLflow run {run_id} to resume is deleted")
    if run.info.experiment_id != experiment_id:
        raise UserError(f"MLflow run {run_id} to resume is not in experiment {experiment!r}")
    logged_hash = run.data.tags.get(TAG_CONFIG_HASH)
    if logged_hash != config_hash:
        raise UserError(
            f"MLflow run {run_id} to resume was logged for config hash {logged_hash!r}, "
            f"not {config_hash!r}: the config changed since"
        )


def _get_run(run_id: str) -> Run:
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as error:
        raise UserError(f"MLflow run {run_id!r} not found in {mlflow.get_tracking_uri()!r}") from error


def find_child_run(parent_run_id: str, name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """A FINISHED child of ``parent_run_id`` with this name and these tags, so a rerun need not log twice."""
    parent = _get_run(parent_run_id)
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'FINISHED'"
    for run in MlflowClient().search_runs([parent.info.experiment_id], filter_string=query, max_results=_SEARCH_PAGE):
        if run.info.run_name == name and all(run.data.tags.get(k) == v for k, v in (tags or {}).items()):
            return run.info.run_id
    return None


def set_tags(tags: Mapping[str, str], run_id: str | None = None) -> None:
    """Set (or overwrite) tags on a run, e.g. the flow run now driving a resumed pipeline run."""
    client = MlflowClient()
    target = resolve_run_id(run_id)
    for key, value in tags.items():
        client.set_tag(target, key, value)
