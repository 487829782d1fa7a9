"""Lineage in MLflow: which command started a run, which data went in, which model came out.

- Source: a pipeline run's ``mlflow.source.*`` tags name the alignflow command
  (MLflow's default is the running Python file, Prefect's ``engine.py``), with
  the recipe and method as tags; child runs copy the source
  (``runs.start_child_run``).
- Models: each round's trained policy is a LoggedModel, produced by the round's
  run (and listed as an output of the pipeline run), with its folder, stage and
  stage key as params and the round's metrics linked. Its weights stay in the
  stage folder unless ``tracking.log_model_weights`` copies them into MLflow.
- Registry: the final round's model is registered under the recipe's name,
  once per stage key.
- Data: a prepared dataset is an input of the run that uses it, with the digest
  alignflow computed and its source (a path, a URL or a hub id).

No Prefect here: the flow decides when, these functions take run ids and paths.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import LoggedModelOutput, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from pipeline_lib.core.errors import UserError
from pipeline_lib.store import read_manifest
from pipeline_lib.tracking.artifacts import log_dataset
from pipeline_lib.tracking.runs import KIND_PIPELINE, TAG_KIND, TAG_ROUND

# The UI shows a JOB source's whole name (the command line); a LOCAL one only after its last "/".
SOURCE_TYPE = "JOB"
TAG_RECIPE = "alignflow.recipe"
TAG_METHOD = "alignflow.method"
TAG_LOG_WEIGHTS = "alignflow.log_model_weights"
TAG_PIPELINE_RUN = "alignflow.pipeline_run_id"
TAG_STAGE_KEY = "alignflow.stage_key"
TAG_DATASET = "alignflow.dataset."  # + name: a dataset a LoggedModel was trained on, valued by its digest
MODEL_TYPE = "alignflow-policy"
# A comparison's contestant runs: their names extend the recipe's name (``compare-tiny`` + ``sft``).
KIND_CONTESTANT = "method"
# MLflow's digest column holds 36 characters; longer (hex) digests keep as many as alignflow's own.
_MAX_DIGEST, _SHORT_DIGEST = 36, 16
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

_command: ContextVar[str | None] = ContextVar("alignflow_command", default=None)


@contextmanager
def running_command(words: Sequence[str]) -> Iterator[None]:
    """Name the command that runs the flows called in this block (``alignflow run RECIPE ...``).

    The CLI knows the command line; the flow it calls only sees a parsed recipe.
    """
    token = _command.set(shlex.join(words))
    try:
        yield
    finally:
        _command.reset(token)


def source_tags(recipe: str, method: str, log_model_weights: bool, command: str | None = None) -> dict[str, str]:
    """A pipeline run's source: ``command``, else the one ``running_command`` named, else the flow
    and recipe (a flow called from Python, a retry started from Prefect's UI)."""
    return {
        MLFLOW_SOURCE_NAME: command or _command.get() or f"alignflow {method} flow, recipe {recipe}",
        MLFLOW_SOURCE_TYPE: SOURCE_TYPE,
        TAG_RECIPE: recipe,
        TAG_METHOD: method,
        # Read back by each round's logging, which sees run ids, not the recipe.
        TAG_LOG_WEIGHTS: str(log_model_weights).lower(),
    }


def log_trained_model(run_id: str, folder: str | Path, round_index: int) -> str:
    """Record the policy trained in ``folder`` as a LoggedModel of the round's run ``run_id``; its id.

    ``folder`` must be a stage output (its manifest gives the stage and key).
    Its weights are copied into MLflow only if the pipeline run was tagged so
    (``tracking.log_model_weights``); otherwise the model is external and its
    ``model_dir`` param says where the weights are.
    """
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    if not manifest or "key" not in manifest:
        raise UserError(f"trained model {folder} is not a stage output (no manifest with a key)")
    client = MlflowClient()
    pipeline, contestants = _pipeline_run(client, run_id)
    tags = pipeline.data.tags
    recipe = "-".join([tags.get(TAG_RECIPE, pipeline.info.run_name), *(c.info.run_name for c in contestants)])
    # A comparison's model was trained by its contestant's method, not by "compare".
    method = next((c.data.tags[TAG_METHOD] for c in reversed(contestants) if TAG_METHOD in c.data.tags), None)
    spec = dict(
        name=f"{recipe}-round-{round_index}",
        source_run_id=run_id,
        experiment_id=pipeline.info.experiment_id,
        model_type=MODEL_TYPE,
        params={
            "model_dir": str(folder),
            "stage": manifest["stage"],
            "stage_key": manifest["key"],
            "round": str(round_index),
            "method": method or tags.get(TAG_METHOD, ""),
        },
        tags={
            # Else MLflow names the Python file running (engine.py) as the model's source too.
            **{key: tags[key] for key in (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE) if key in tags},
            TAG_RECIPE: recipe,
            TAG_ROUND: str(round_index),
            TAG_PIPELINE_RUN: pipeline.info.run_id,
        },
    )
    if tags.get(TAG_LOG_WEIGHTS) == "true":
        model = mlflow.initialize_logged_model(**spec)  # PENDING until its files are in
        try:
            client.log_model_artifacts(model.model_id, str(folder))
        except BaseException:
            client.finalize_logged_model(model.model_id, "FAILED")  # not left looking as if still uploading
            raise
        client.finalize_logged_model(model.model_id, "READY")
    else:
        model = mlflow.create_external_model(**spec)  # READY, with a stub MLmodel file so it can be registered
    # Run pages list a run's model outputs under "Logged models"; the pipeline run's lists every round's.
    for producer in dict.fromkeys((run_id, pipeline.info.run_id)):
        client.log_outputs(producer, [LoggedModelOutput(model.model_id, step=round_index)])
    return model.model_id


def register_final_model(pipeline_run_id: str, folder: str | Path, name: str) -> ModelVersion | None:
    """Register the LoggedModel that ``pipeline_run_id`` logged for ``folder`` as a version of ``name``.

    One version per stage key: a rerun that reuses the final training (or
    another run of the recipe that trains the same model) finds its version
    instead of adding one; a run whose final training differs adds a version.
    None when ``folder`` is no trained stage output or this run logged no
    model for it (the starting model, a round logged before models were).
    """
    key = (read_manifest(Path(folder).resolve()) or {}).get("key")
    if key is None:
        return None
    client = MlflowClient()
    # Recipe names are plain tokens (pipeline_lib.config), and keys hex digests: nothing to escape.
    registered = client.search_model_versions(f"name = '{name}' AND tags.`{TAG_STAGE_KEY}` = '{key}'")
    if registered:
        return registered[0]
    experiment_id = client.get_run(pipeline_run_id).info.experiment_id
    models = client.search_logged_models(
        [experiment_id],
        filter_string=f"params.stage_key = '{key}' AND tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    if not models:
        return None
    tags = {TAG_STAGE_KEY: key, TAG_PIPELINE_RUN: pipeline_run_id}
    return mlflow.register_model(f"models:/{models[0].model_id}", name, tags=tags)


def log_dataset_input(
    run_id: str, parquet_file: str | Path, name: str, digest: str | None, source: str, context: str
) -> str:
    """Record a prepared Parquet file as an input of ``run_id`` (``context``: "train", "eval"...).

    ``digest`` is the one alignflow computed, kept as given (MLflow's own
    misses list columns); one longer than MLflow's 36 characters keeps its
    first 16; None: the rows' content digest (``tracking.log_dataset``'s, the
    same wherever the rows are logged). ``source`` is where the rows came
    from: a local path, a URL or a hub id (``org/name``). Returns the digest logged.
    """
    digest = None if digest is None else digest.strip()
    if digest == "":
        raise UserError(f"dataset {name!r}: the digest is empty")
    if digest and len(digest) > _MAX_DIGEST:
        digest = digest[:_SHORT_DIGEST]
    return log_dataset(
        Path(parquet_file), name=name, context=context, source=_dataset_source(source, name), run_id=run_id, digest=digest
    )


def log_model_dataset(model_id: str, parquet_file: str | Path, name: str, digest: str, source: str) -> str:
    """Record a dataset a LoggedModel was trained on; returns the digest logged.

    MLflow (3.17) links datasets to runs and runs to models, not datasets to
    models: the dataset becomes a "train" input of the model's source run (the
    round that trained it), and a tag on the model names it with its digest.
    """
    client = MlflowClient()
    model = client.get_logged_model(model_id)
    digest = log_dataset_input(model.source_run_id, parquet_file, name, digest, source, "train")
    client.set_logged_model_tags(model_id, {f"{TAG_DATASET}{name}": digest})
    return digest


def _pipeline_run(client: MlflowClient, run_id: str) -> tuple[Run, list[Run]]:
    """The pipeline run ``run_id`` belongs to (itself or an ancestor), and the contestants' runs between."""
    run, contestants = client.get_run(run_id), []
    while run.data.tags.get(TAG_KIND) != KIND_PIPELINE:
        if run.data.tags.get(TAG_KIND) == KIND_CONTESTANT:
            contestants.insert(0, run)
        parent = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent is None:
            raise UserError(f"MLflow run {run_id} belongs to no alignflow pipeline run")
        run = client.get_run(parent)
    return run, contestants


def _dataset_source(source: str, name: str) -> str | DatasetSource:
    """A path or URL as MLflow resolves it; a hub id as a Hugging Face source."""
    if source.startswith(("http://", "https://")):
        return source
    if Path(source).exists():
        return str(Path(source).resolve())
    if _HUB_ID.fullmatch(source):
        return HuggingFaceDatasetSource(source)
    raise UserError(f"source {source!r} of dataset {name!r} is neither an existing path, an http(s) URL nor a hub id")
