"""Where runs are stored: the tracking URI, the experiment and its artifact folder."""

import re
import shlex
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import mlflow_dir

_HEALTH_TIMEOUT_S = 5.0
# Port `mlflow ui` listens on unless told otherwise.
_UI_PORT = 5000


def default_tracking_uri() -> str:
    """The local SQLite store under ``$ALIGNFLOW_HOME/mlflow``."""
    return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def configure(uri: str | None, experiment: str) -> str:
    """Point MLflow at ``uri`` (None: the local store) and return the experiment's id.

    Creates the experiment if missing; calling it again is harmless.
    """
    uri = uri or default_tracking_uri()
    if _is_http(uri):
        _check_server_reachable(uri)
    try:
        experiment_id = _ensure_experiment(MlflowClient(uri), uri, experiment)
    except (MlflowException, OSError, SQLAlchemyError) as error:
        raise UserError(f"MLflow tracking URI {uri!r} is not usable: {_first_line(error)}") from error
    mlflow.set_tracking_uri(uri)
    return experiment_id


def experiment_id_of(experiment: str) -> str:
    """The id of ``experiment`` in the configured store, created if missing.

    With no store configured, the local one: MLflow's own default would put a
    database and ./mlruns in the current folder.
    """
    return configure(mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None, experiment)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """Where to look at a run.

    For an http(s) store, the run's page in the MLflow UI. For a SQLite store,
    which has no server, the command that starts one and the page it will show.
    None for stores with no UI we know how to address.
    """
    page = run_page(experiment_id, run_id)
    address = ui_address(tracking_uri)
    if _is_http(tracking_uri):
        return f"{address}/{page}"
    if address:
        return f"`alignflow ui` (or `make ui`), then {address}/{page}"
    if tracking_uri.startswith("sqlite:"):
        # One worker and no job runner: the defaults start ~11 processes (~1.9 GB).
        return (
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --workers 1 "
            f"--port {_UI_PORT} --backend-store-uri {shlex.quote(tracking_uri)}"
            f" ; then open http://127.0.0.1:{_UI_PORT}/{page}"
        )
    return None


def run_page(experiment_id: str, run_id: str) -> str:
    """A run's page, relative to the MLflow UI's address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def ui_address(tracking_uri: str) -> str | None:
    """The MLflow UI that shows this store: the server itself for an http store, the one
    `alignflow ui` starts for the local store, None for any other."""
    if _is_http(tracking_uri):
        return tracking_uri.rstrip("/")
    if tracking_uri == default_tracking_uri():
        return f"http://127.0.0.1:{_UI_PORT}"
    return None


def _ensure_experiment(client: MlflowClient, uri: str, experiment: str) -> str:
    existing = client.get_experiment_by_name(experiment)
    if existing is None:
        try:
            return client.create_experiment(experiment, artifact_location=_artifact_location(uri, experiment))
        except MlflowException:
            # Another process may have created it between our lookup and create.
            existing = client.get_experiment_by_name(experiment)
            if existing is None:
                raise
    if existing.lifecycle_stage == LifecycleStage.DELETED:
        raise UserError(
            f"MLflow experiment {experiment!r} is deleted in {uri!r}; restore it "
            f"(mlflow experiments restore --experiment-id {existing.experiment_id}) or pick another name"
        )
    expected = _artifact_location(uri, experiment)
    if expected and existing.artifact_location != expected and existing.artifact_location.endswith(expected.rsplit("/", 1)[1]):
        _relocate_artifacts(_sqlite_file(uri), existing.artifact_location.rsplit("/", 1)[0], expected.rsplit("/", 1)[0])
    return existing.experiment_id


def _relocate_artifacts(database: Path | None, old_root: str, new_root: str) -> None:
    """Point a store's artifact paths at the folder beside it after the home was moved or restored.

    MLflow records absolute artifact URIs; left alone, a resumed run in a moved
    home would write its artifacts into the old home (or fail where it is gone).
    """
    if database is None:
        return
    with sqlite3.connect(database) as db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location")):
            if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (new_root, len(old_root) + 1, len(old_root) + 1, old_root + "/"),
                )


def _artifact_location(uri: str, experiment: str) -> str | None:
    """A local artifact folder for database stores, so nothing lands in ./mlruns.

    Servers (http, databricks) choose their own artifact store: None.
    """
    if _is_http(uri) or uri.startswith("databricks"):
        return None
    root = _sqlite_file(uri)
    root = root.parent / "artifacts" if root else mlflow_dir() / "artifacts"
    # Several names may share a folder after this; run ids keep their files apart.
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment)
    return (root / folder).resolve().as_uri()


def _sqlite_file(uri: str) -> Path | None:
    try:
        url = make_url(uri)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _check_server_reachable(uri: str) -> None:
    # MLflow retries a dead server with backoff for minutes; fail in seconds instead.
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=_HEALTH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered, so it is there (maybe behind auth)
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"MLflow tracking server {uri!r} is not reachable: {error}") from error


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
