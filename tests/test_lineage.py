"""Lineage in MLflow: a run's source, each round's trained policy as a LoggedModel, the final model in
the registry, prepared datasets as inputs. Helpers on a SQLite store of their own; a tiny SFT run end to end."""

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from methods.recipe import load_recipe
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError
from pipeline_lib.reporting.metrics import EVAL_SCORE, TRAIN_LOSS
from pipeline_lib.store import read_manifest, write_manifest
from pipeline_lib.tracking import lineage

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "sft-tiny.yaml")
EXPERIMENT = "lineage-tests"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(store_uri):
    """The module's store, configured for one test only: MLflow exports its URI, which a flow run
    in this worker would otherwise log into."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    tracking.configure(store_uri, EXPERIMENT)
    yield MlflowClient(store_uri)
    mlflow.set_tracking_uri(previous)  # None also clears the variable MLflow exported


def _parquet(folder: Path) -> Path:
    path = folder / "rows.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "chosen": ["x", "y"]}).to_parquet(path)
    return path


def _trained(folder: Path, key: str) -> Path:
    """A stand-in for a train-policy stage output: a weights file and its manifest."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    write_manifest(folder, stage="train-policy", key=key)
    return folder


def _pipeline(config_hash: str, weights: bool = False):
    tags = lineage.source_tags("lineage-recipe", "sft", weights, command="alignflow run configs/x.yaml")
    return tracking.start_pipeline_run(EXPERIMENT, "lineage-recipe-run", {"name": "x"}, config_hash, tags=tags)


def _input(client, run_id: str, name: str):
    return next(i for i in client.get_run(run_id).inputs.dataset_inputs if i.dataset.name == name)


def test_dataset_input_keeps_the_given_digest_context_and_source(client, tmp_path):
    rows = _parquet(tmp_path)
    run_id = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    assert lineage.log_dataset_input(run_id, rows, "data-preference", "abc123", str(rows), "train") == "abc123"
    assert lineage.log_dataset_input(run_id, rows, "data-prompts", "d" * 64, "HuggingFaceH4/mt_bench_prompts", "prompts") == "d" * 16

    local = _input(client, run_id, "data-preference")
    assert local.dataset.digest == "abc123" and local.dataset.source_type == "local"
    assert json.loads(local.dataset.source)["uri"] == str(rows.resolve())
    assert {tag.key: tag.value for tag in local.tags}["mlflow.data.context"] == "train"
    assert json.loads(local.dataset.profile)["num_rows"] == 2
    hub = _input(client, run_id, "data-prompts")
    assert hub.dataset.source_type == "hugging_face" and json.loads(hub.dataset.source)["path"] == "HuggingFaceH4/mt_bench_prompts"


@pytest.mark.parametrize(
    ("source", "digest", "message"),
    [
        ("no such file.jsonl", "abc", "neither an existing path"),
        ("s3://bucket/rows.parquet", "abc", "neither an existing path"),
        ("{rows}", " ", "the digest is empty"),
    ],
)
def test_bad_dataset_inputs_are_one_line_user_errors(client, tmp_path, source, digest, message):
    rows = _parquet(tmp_path)
    run_id = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    with pytest.raises(UserError, match=message) as error:
        lineage.log_dataset_input(run_id, rows, "data", digest, source.format(rows=rows), "train")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="as Parquet"):
        lineage.log_dataset_input(run_id, tmp_path / "missing.parquet", "data", "abc", str(rows), "train")


def test_a_trained_model_is_an_external_logged_model_with_linked_metrics_and_data(client, tmp_path):
    folder = _trained(tmp_path / "stages" / "train-policy" / "k1", "k1" * 32)
    with _pipeline("lineage-a") as parent:
        with tracking.start_child_run(parent.info.run_id, "round-1", step=1) as child:
            model_id = lineage.log_trained_model(child.info.run_id, folder, 1)
            tracking.log_metrics({EVAL_SCORE: 0.5}, step=1, run_id=child.info.run_id, model_id=model_id)
            lineage.log_model_dataset(model_id, _parquet(tmp_path), "train-rows", "feed", str(tmp_path))

    model = client.get_logged_model(model_id)
    assert model.name == "lineage-recipe-round-1" and model.source_run_id == child.info.run_id
    assert model.params == {"model_dir": str(folder.resolve()), "stage": "train-policy", "stage_key": "k1" * 32, "round": "1", "method": "sft"}
    assert model.tags[MLFLOW_MODEL_IS_EXTERNAL] == "true" and model.tags["alignflow.dataset.train-rows"] == "feed"
    assert model.tags[MLFLOW_SOURCE_NAME] == "alignflow run configs/x.yaml"
    assert [(m.key, m.value, m.step) for m in model.metrics] == [(EVAL_SCORE, 0.5, 1)]
    assert [a.path for a in client.list_logged_model_artifacts(model_id)] == ["MLmodel"]  # no weights
    # The round's run names the command too, trained on the dataset, and both runs list the model.
    child = client.get_run(child.info.run_id)
    assert child.data.tags[MLFLOW_SOURCE_NAME] == "alignflow run configs/x.yaml" and child.data.tags[MLFLOW_SOURCE_TYPE] == "JOB"
    assert _input(client, child.info.run_id, "train-rows").dataset.digest == "feed"
    for run_id in (child.info.run_id, parent.info.run_id):
        assert [(o.model_id, o.step) for o in client.get_run(run_id).outputs.model_outputs] == [(model_id, 1)]


def test_weights_are_logged_when_the_run_asks_for_them(client, tmp_path):
    folder = _trained(tmp_path / "k2", "k2" * 32)
    with _pipeline("lineage-b", weights=True) as parent:
        with tracking.start_child_run(parent.info.run_id, "round-1", step=1) as child:
            model_id = lineage.log_trained_model(child.info.run_id, folder, 1)
    model = client.get_logged_model(model_id)
    assert model.status == LoggedModelStatus.READY and MLFLOW_MODEL_IS_EXTERNAL not in model.tags
    assert {a.path for a in client.list_logged_model_artifacts(model_id)} == {"model.safetensors", "manifest.json"}


def test_a_model_folder_without_a_manifest_is_a_user_error(client, tmp_path):
    with _pipeline("lineage-c") as parent:
        with tracking.start_child_run(parent.info.run_id, "round-1", step=1) as child:
            with pytest.raises(UserError, match="is not a stage output"):
                lineage.log_trained_model(child.info.run_id, tmp_path, 1)


def test_the_final_model_is_registered_once_per_stage_key(client, tmp_path):
    first, second = _trained(tmp_path / "a", "aa" * 32), _trained(tmp_path / "b", "bb" * 32)
    with _pipeline("lineage-d") as parent:
        with tracking.start_child_run(parent.info.run_id, "round-1", step=1) as child:
            model_id = lineage.log_trained_model(child.info.run_id, first, 1)
    parent_id = parent.info.run_id

    version = lineage.register_final_model(parent_id, first, "lineage-recipe")
    assert version.source == f"models:/{model_id}" and version.tags["alignflow.stage_key"] == "aa" * 32
    assert lineage.register_final_model(parent_id, first, "lineage-recipe").version == version.version
    registered = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert [(v["name"], str(v["version"])) for v in registered] == [("lineage-recipe", str(version.version))]
    # Nothing to register: a folder this run logged no model for, or that is no stage output.
    assert lineage.register_final_model(parent_id, second, "lineage-recipe") is None
    assert lineage.register_final_model(parent_id, tmp_path, "lineage-recipe") is None
    # Another final training (another stage key) is a new version.
    with _pipeline("lineage-e") as other:
        with tracking.start_child_run(other.info.run_id, "round-1", step=1) as child:
            lineage.log_trained_model(child.info.run_id, second, 1)
    assert int(lineage.register_final_model(other.info.run_id, second, "lineage-recipe").version) == int(version.version) + 1


def test_the_command_named_by_the_cli_is_the_source():
    with lineage.running_command(["alignflow", "run", "configs/my recipe.yaml", "train.lr=1e-5"]):
        tags = lineage.source_tags("sft-tiny", "sft", False)
    assert tags[MLFLOW_SOURCE_NAME] == "alignflow run 'configs/my recipe.yaml' train.lr=1e-5"
    assert lineage.source_tags("sft-tiny", "sft", False)[MLFLOW_SOURCE_NAME] == "alignflow sft flow, recipe sft-tiny"


@pytest.mark.integration
def test_a_tiny_run_records_its_source_its_models_and_registers_the_final_one(capsys, alignflow_home):
    # An experiment of its own: a new parent run whatever else this worker ran (tracking is not hashed);
    # a learning rate of its own: a training of its own, not found in the cache by another test's sft-tiny run.
    experiment = f"tracking.experiment={EXPERIMENT}"
    own = "train.lr=2e-3"
    recipe = load_recipe(RECIPE, [experiment, own])
    out, _ = run_recipe(capsys, RECIPE, experiment, own)
    client = MlflowClient(tracking.default_tracking_uri())
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.get_run(tracking.find_run(EXPERIMENT, config_hash(recipe)))

    source = parent.data.tags[MLFLOW_SOURCE_NAME]
    assert source == f"alignflow run {RECIPE} {experiment} {own}" and parent.data.tags[MLFLOW_SOURCE_TYPE] == "JOB"
    assert (parent.data.tags["alignflow.recipe"], parent.data.tags["alignflow.method"]) == ("sft-tiny", "sft")
    children = {
        run.info.run_name: run
        for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    }
    assert set(children) == {"round-0", "round-1"}
    assert {run.data.tags[MLFLOW_SOURCE_NAME] for run in children.values()} == {source}

    def models() -> list:
        return client.search_logged_models([experiment_id], f"tags.`alignflow.pipeline_run_id` = '{parent.info.run_id}'")

    # Round 1 trained the policy: one LoggedModel, from round 1's run, naming its folder and stage key.
    policy = (alignflow_home / "runs" / parent.info.run_name / "round-1" / "train-policy").resolve()
    key = read_manifest(policy)["key"]
    [model] = models()
    assert model.source_run_id == children["round-1"].info.run_id
    assert (model.params["model_dir"], model.params["stage_key"], model.params["round"]) == (str(policy), key, "1")
    assert model.params["method"] == "sft" and model.name == "sft-tiny-round-1"
    assert {EVAL_SCORE, TRAIN_LOSS} <= {m.key for m in model.metrics}
    assert [a.path for a in client.list_logged_model_artifacts(model.model_id)] == ["MLmodel"]  # weights stay put
    assert [o.model_id for o in client.get_run(parent.info.run_id).outputs.model_outputs] == [model.model_id]

    def versions() -> list:
        return client.search_model_versions(f"name = 'sft-tiny' AND tags.`alignflow.stage_key` = '{key}'")

    [version] = versions()
    assert client.get_logged_model(version.source.removeprefix("models:/")).params["stage_key"] == key
    assert f"(registered: models:/sft-tiny/{version.version})" in out

    # The same command again: every stage reused, no model logged or registered twice.
    run_recipe(capsys, RECIPE, experiment, own)
    assert [m.model_id for m in models()] == [model.model_id]
    assert [v.version for v in versions()] == [version.version]

    # Weights on request: another experiment, the same stages, the same registered version.
    weights = (f"tracking.experiment={EXPERIMENT}-weights", "tracking.log_model_weights=true", own)
    run_recipe(capsys, RECIPE, *weights)
    other = client.get_experiment_by_name(f"{EXPERIMENT}-weights").experiment_id
    [copied] = client.search_logged_models([other], f"params.stage_key = '{key}'")
    assert {"config.json", "model.safetensors"} <= {a.path for a in client.list_logged_model_artifacts(copied.model_id)}
    assert [v.version for v in versions()] == [version.version]
