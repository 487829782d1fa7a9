"""What a pipeline run tells Prefect and MLflow about each other, and the summary it leaves in Prefect.

The MLflow parent run carries the Prefect flow run's id and page; the flow
run carries the MLflow run's id (a tag) and page (a link artifact). Both are
set as soon as the run starts, so a stage that fails later can be followed
from either side. When the run ends, its per-round table goes to Prefect as a
markdown artifact and a table artifact, beside the same table in MLflow.
"""

from __future__ import annotations

import mlflow
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from pipeline_lib import tracking
from pipeline_lib.reporting.tables import Rounds, markdown_table, table_records

TAG_PREFECT_FLOW_RUN = "prefect.flow_run_id"
TAG_PREFECT_FLOW_RUN_URL = "prefect.flow_run_url"
PREFECT_TAG_MLFLOW_RUN = "mlflow-run"
# Artifact keys: lowercase letters, digits and dashes. A rerun adds a new
# version under the same key, so the UI shows the latest one first.
KEY_MLFLOW_LINK = "mlflow-run"
KEY_SUMMARY = "run-summary"
KEY_ROUNDS = "rounds"


def flow_run_url(flow_run_id: str) -> str | None:
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else None


def mlflow_run_url(run_id: str) -> str | None:
    address = tracking.ui_address(mlflow.get_tracking_uri())
    if address is None:
        return None
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return f"{address}/{tracking.run_page(experiment_id, run_id)}"


def prefect_tags() -> dict[str, str]:
    """The MLflow tags naming the flow run doing the work now (a retry keeps its flow run; a rerun has a new one)."""
    tags = {TAG_PREFECT_FLOW_RUN: str(flow_run.id or "")}
    url = flow_run.id and flow_run_url(flow_run.id)
    if url:
        tags[TAG_PREFECT_FLOW_RUN_URL] = url
    return tags


def link_mlflow_run(mlflow_run_id: str) -> None:
    """Tag the current flow run with its MLflow run and link that run's page."""
    if not flow_run.id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        tag = f"{PREFECT_TAG_MLFLOW_RUN}:{mlflow_run_id}"
        if tag not in current.tags:
            client.update_flow_run(flow_run.id, tags=[*current.tags, tag])
    url = mlflow_run_url(mlflow_run_id)
    if url:
        create_link_artifact(
            url, link_text=f"MLflow run {mlflow_run_id}", key=KEY_MLFLOW_LINK, description="This run's MLflow parent run"
        )


def publish_summary(title: str, rounds: Rounds, run_dir: str, mlflow_run_id: str) -> None:
    """The per-round table as Prefect artifacts: markdown with the run's links, and a sortable table."""
    markdown = f"# {title}\n\n{markdown_table(rounds)}\n- MLflow run: {_linked(mlflow_run_id)}\n- run folder: `{run_dir}`\n"
    create_markdown_artifact(markdown, key=KEY_SUMMARY, description=f"{title}: held-out metrics per round")
    create_table_artifact(table_records(rounds), key=KEY_ROUNDS, description=f"{title}: every metric per round")


def publish_leaderboard(title: str, markdown: str, rows: list[dict], mlflow_run_id: str) -> None:
    """A comparison's leaderboard as Prefect artifacts, like a run's per-round table."""
    text = f"# {title}\n\n{markdown}\n- MLflow run: {_linked(mlflow_run_id)}\n"
    create_markdown_artifact(text, key=KEY_SUMMARY, description=f"{title}: leaderboard")
    create_table_artifact(rows, key="leaderboard", description=f"{title}: leaderboard")


def _linked(mlflow_run_id: str) -> str:
    url = mlflow_run_url(mlflow_run_id)
    return f"[{mlflow_run_id}]({url})" if url else mlflow_run_id
