"""Datasets, tables, files, texts and figures attached to a run."""

import hashlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow.data
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from pipeline_lib.core.errors import UserError
from pipeline_lib.tracking.writing import resolve_run_id

# Within MLflow's digest column (MAX_DATASET_DIGEST_SIZE, 36) and as short as its own.
_DIGEST_CHARS = 16


def log_dataset(
    data: str | Path | pd.DataFrame,
    name: str,
    context: str,
    source: str | DatasetSource | None = None,
    run_id: str | None = None,
    digest: str | None = None,
) -> str:
    """Record a Parquet file or DataFrame as a run input (``context``: "train", "eval"...).

    ``source`` is where the data came from (a path or URL); for a file it
    defaults to the file. Returns the dataset digest: ``digest`` if given, else
    a hash of every row and column, so the same data gets the same digest
    wherever it was loaded from.
    """
    run_id = resolve_run_id(run_id)
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        frame = _read_parquet(Path(data))
        source = source or str(Path(data).resolve())
    with _quiet_mlflow():
        dataset = mlflow.data.from_pandas(
            frame, source=_resolve_source(source, name), name=name, digest=digest or _content_digest(frame)
        )
        # The fluent mlflow.log_input only reaches the active run; the client
        # call needs the entity, which Dataset exposes only as this method.
        entity = dataset._to_mlflow_entity()
    entry = DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    MlflowClient().log_inputs(run_id, datasets=[entry])
    return dataset.digest


def log_table(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    artifact_file: str,
    run_id: str | None = None,
) -> None:
    """Log rows as an MLflow table (a ``.json`` artifact the UI shows as a table).

    Logging to an existing ``artifact_file`` appends rows to it (MLflow's rule).
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    with _quiet_mlflow():
        MlflowClient().log_table(resolve_run_id(run_id), frame, artifact_file)


def log_artifact(path: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Copy a file, or a folder's content, into the run's artifacts under ``artifact_path``."""
    client = MlflowClient()
    if Path(path).is_dir():
        client.log_artifacts(resolve_run_id(run_id), str(path), artifact_path)
    else:
        client.log_artifact(resolve_run_id(run_id), str(path), artifact_path)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    MlflowClient().log_text(resolve_run_id(run_id), text, artifact_file)


def log_figure(figure: Figure, artifact_file: str, run_id: str | None = None) -> None:
    """Save a matplotlib figure as an artifact (the extension picks the format).

    Build figures with ``matplotlib.figure.Figure`` rather than pyplot: no GUI
    backend, no global state shared between threads.
    """
    MlflowClient().log_figure(resolve_run_id(run_id), figure, artifact_file)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read dataset file {path} as Parquet: {error}") from error


def _content_digest(frame: pd.DataFrame) -> str:
    # MLflow's own digest skips columns that are neither text nor numbers (chat
    # messages, lists) and rows past 10,000, so datasets differing only there
    # would share it. JSON serialises list cells the same whether they came
    # from Python lists or from Parquet's arrays.
    text = frame.to_json(orient="split", index=False, date_format="iso", double_precision=15)
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]


def _resolve_source(source: str | DatasetSource | None, name: str) -> DatasetSource | None:
    if source is None or isinstance(source, DatasetSource):
        return source  # None: MLflow records the code that logged it instead
    try:
        return resolve_dataset_source(source)
    except MlflowException as error:
        raise UserError(
            f"source {source!r} of dataset {name!r} is neither a local path nor a URL MLflow knows"
        ) from error


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    # Noise nobody here can act on: mlflow.data warns on every local path (two
    # schemes register the same source class) and every integer column (a
    # hint meant for model signatures), and MLflow trips pandas deprecations.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.(data|types)\.")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
        yield
