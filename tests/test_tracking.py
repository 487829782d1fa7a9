"""MLflow helpers against a real SQLite store (one per module: creating it costs ~2 s)."""

import json
import os
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import mlflow
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, _validate_metric_name

from pipeline_lib import tracking
from pipeline_lib.core.errors import UserError

EXPERIMENT = "alignflow-tests"


class Store(NamedTuple):
    uri: str
    folder: Path
    experiment_id: str
    client: MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment_id = tracking.configure(uri, EXPERIMENT)
    yield Store(uri, folder, experiment_id, MlflowClient(uri))
    mlflow.set_tracking_uri(previous)  # None also clears the variable MLflow exported


def fresh_hash() -> str:
    return uuid.uuid4().hex[:16]


def children_of(store: Store, parent_run_id: str) -> dict[str, mlflow.entities.Run]:
    runs = store.client.search_runs(
        [store.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {run.info.run_name: run for run in runs}


def test_importing_tracking_switches_mlflow_telemetry_off():
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
    from mlflow.telemetry import get_telemetry_client

    assert MLFLOW_DISABLE_TELEMETRY.get() is True
    assert get_telemetry_client() is None


def test_default_store_is_sqlite_under_alignflow_home(alignflow_home):
    assert tracking.default_tracking_uri() == f"sqlite:///{alignflow_home.resolve()}/mlflow/mlflow.db"


def test_configure_is_idempotent_and_keeps_artifacts_beside_the_database(store, tmp_path, monkeypatch):
    assert tracking.configure(store.uri, EXPERIMENT) == store.experiment_id
    assert mlflow.get_tracking_uri() == store.uri
    location = store.client.get_experiment(store.experiment_id).artifact_location
    assert location == (store.folder / "artifacts" / EXPERIMENT).as_uri()

    monkeypatch.chdir(tmp_path)
    with tracking.start_pipeline_run(EXPERIMENT, "artifacts", {"a": 1}, fresh_hash()) as run:
        pass
    assert (store.folder / "artifacts" / EXPERIMENT / run.info.run_id / "artifacts" / "config.yaml").is_file()
    assert not (tmp_path / "mlruns").exists()


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "bad_uri",
    # A fixed id: the port differs between xdist workers, which must collect the same test ids.
    ["sqlite:////proc/no-such-dir/mlflow.db", "nosuchscheme://somewhere",
     pytest.param(_closed_port_url(), id="closed-port")],  # fmt: skip
)
def test_unusable_tracking_uri_is_a_user_error_naming_it(store, bad_uri):
    with pytest.raises(UserError, match=re.escape(repr(bad_uri))):
        tracking.configure(bad_uri, EXPERIMENT)
    assert mlflow.get_tracking_uri() == store.uri


def test_parent_with_children_forms_a_tree_and_statuses_follow_outcome(store):
    config_hash = fresh_hash()
    with tracking.start_pipeline_run(
        EXPERIMENT, "tree", {"rounds": 2}, config_hash, tags={"alignflow.recipe": "seft"}
    ) as parent:
        parent_id = parent.info.run_id
        with tracking.start_child_run(parent_id, "round-0", step=0) as child:
            tracking.log_metrics({"train/loss": 1.0}, step=0, run_id=child.info.run_id)
        with pytest.raises(RuntimeError, match="boom"):
            with tracking.start_child_run(parent_id, "round-1", step=1):
                raise RuntimeError("boom")
        # A Prefect task runs in a worker thread, where no run is active.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(_stage_in_thread, parent_id).result()

    parent_run = store.client.get_run(parent_id)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["alignflow.kind"] == "pipeline"
    assert parent_run.data.tags["alignflow.config_hash"] == config_hash
    assert parent_run.data.tags["alignflow.recipe"] == "seft"
    assert parent_run.data.tags["alignflow.version"]

    children = children_of(store, parent_id)
    assert set(children) == {"round-0", "round-1", "evaluate"}
    assert children["round-0"].info.status == "FINISHED"
    assert children["round-1"].info.status == "FAILED"
    assert children["round-1"].data.tags["alignflow.round"] == "1"
    assert children["round-0"].data.tags["alignflow.kind"] == "round"
    assert children["evaluate"].data.tags["alignflow.kind"] == "stage"
    assert children["evaluate"].data.metrics == {"judge/score": 7.5}


def _stage_in_thread(parent_id: str) -> None:
    with tracking.start_child_run(parent_id, "evaluate", kind="stage") as child:
        tracking.log_metrics({"judge/score": 7.5}, run_id=child.info.run_id)


def test_failing_pipeline_run_ends_failed_and_reraises(store):
    with pytest.raises(ValueError, match="bad round"):
        with tracking.start_pipeline_run(EXPERIMENT, "fails", {}, fresh_hash()) as run:
            raise ValueError("bad round")
    assert store.client.get_run(run.info.run_id).info.status == "FAILED"


def test_flatten_params_dots_keys_and_encodes_values():
    flat = tracking.flatten_params(
        {"train": {"lr": 1e-5, "optim": {"name": "adamw"}}, "rounds": [0, 1], "seed": None, "empty": {}}
    )
    assert flat == {
        "train.lr": "1e-05",
        "train.optim.name": "adamw",
        "rounds": "[0, 1]",
        "seed": "None",
        "empty": "{}",
    }


def test_params_are_batched_truncated_and_config_yaml_is_complete(store):
    long_value = "x" * (MAX_PARAM_VAL_LENGTH + 123)
    config = {"grid": {f"k{i}": i for i in range(250)}, "prompt": long_value, "tags": ["a", "b"]}
    with tracking.start_pipeline_run(EXPERIMENT, "params", config, fresh_hash()) as run:
        pass

    params = store.client.get_run(run.info.run_id).data.params
    assert len(params) == 252  # more than one batch of MLflow's 100
    assert params["grid.k249"] == "249"
    assert params["tags"] == '["a", "b"]'
    truncated = params["prompt"]
    assert len(truncated) <= MAX_PARAM_VAL_LENGTH
    marker = re.search(r"…\[\+(\d+) chars\]$", truncated)
    assert marker and len(truncated) - len(marker.group(0)) + int(marker.group(1)) == len(long_value)

    logged = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
    assert logged == config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("train/loss", "train/loss"),
        ("acc@k:5", "acc_k_5"),
        ("précision", "precision"),
        ("日本", "__"),
        ("/a//b/./c/", "a/b/c"),
        ("../up", "__/up"),
        ("..hidden", "_.hidden"),
        ("", "_"),
        ("/", "_"),
    ],
)
def test_sanitize_metric_name(raw, expected):
    name = tracking.sanitize_metric_name(raw)
    assert name == expected
    _validate_metric_name(name)  # MLflow's own check raises on a name it refuses


def test_sanitize_metric_name_shortens_long_names_distinctly():
    first, second = (tracking.sanitize_metric_name("m" * 400 + end) for end in "ab")
    assert first != second
    assert len(first) == len(second) == MAX_ENTITY_KEY_LENGTH
    _validate_metric_name(first)


def test_metrics_are_sanitised_stepped_and_none_skipped(store):
    with tracking.start_pipeline_run(EXPERIMENT, "metrics", {}, fresh_hash()) as run:
        for step in range(3):
            logged = tracking.log_metrics(
                {"reward@mean": step / 2, "win:rate": 0.5, "précision": 1.0, "skipped": None}, step=step
            )
    assert logged == {"reward@mean": "reward_mean", "win:rate": "win_rate", "précision": "precision"}

    # After the run ended nothing is active here: only an explicit id reaches it.
    with pytest.raises(RuntimeError, match="pass run_id"):
        tracking.log_metrics({"reward@mean": 2.0}, step=3)
    tracking.log_metrics({"reward@mean": 2.0}, step=3, run_id=run.info.run_id)

    history = store.client.get_metric_history(run.info.run_id, "reward_mean")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0)]
    assert set(store.client.get_run(run.info.run_id).data.metrics) == {"reward_mean", "win_rate", "precision"}


def test_colliding_metric_names_are_refused(store):
    with tracking.start_pipeline_run(EXPERIMENT, "collide", {}, fresh_hash()):
        with pytest.raises(ValueError, match="both become 'a_b'"):
            tracking.log_metrics({"a@b": 1.0, "a:b": 2.0})


def test_datasets_are_run_inputs_with_context_and_stable_digest(store, tmp_path):
    frame = pd.DataFrame(
        {
            "messages": [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]],
            "chosen": ["a", "b"],
            "score": [1, 2],
        }
    )
    parquet = tmp_path / "prefs.parquet"
    frame.to_parquet(parquet)
    only_messages_differ = frame.assign(messages=[[{"role": "user", "content": "bye"}]] * 2)
    with tracking.start_pipeline_run(EXPERIMENT, "datasets", {}, fresh_hash()) as run:
        from_file = tracking.log_dataset(parquet, "prefs", context="train")
        from_frame = tracking.log_dataset(frame, "prefs-frame", "train", source="https://example.com/p.jsonl")
        other = tracking.log_dataset(only_messages_differ, "prefs-other", "eval")
    assert from_file == from_frame != other

    inputs = {
        item.dataset.name: item for item in store.client.get_run(run.info.run_id).inputs.dataset_inputs
    }
    assert set(inputs) == {"prefs", "prefs-frame", "prefs-other"}
    prefs = inputs["prefs"]
    assert {(tag.key, tag.value) for tag in prefs.tags} == {("mlflow.data.context", "train")}
    assert prefs.dataset.digest == from_file
    assert str(parquet) in json.loads(prefs.dataset.source).values()
    assert {(tag.key, tag.value) for tag in inputs["prefs-other"].tags} == {("mlflow.data.context", "eval")}


def test_unreadable_dataset_file_is_a_user_error(store, tmp_path):
    not_parquet = tmp_path / "rows.parquet"
    not_parquet.write_text("not parquet")
    with tracking.start_pipeline_run(EXPERIMENT, "bad-dataset", {}, fresh_hash()):
        with pytest.raises(UserError, match="rows.parquet"):
            tracking.log_dataset(not_parquet, "rows", "train")


def test_tables_texts_files_and_figures_are_readable_artifacts(store, tmp_path):
    rows = [{"prompt": "hi", "response": "hello", "reward": 0.5}, {"prompt": "yo", "response": "hey", "reward": 1.0}]
    note = tmp_path / "note.txt"
    note.write_text("kept")
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    with tracking.start_pipeline_run(EXPERIMENT, "artifacts", {}, fresh_hash()) as run:
        tracking.log_table(rows, "samples/round-0.json")
        tracking.log_text("decision: keep", "reviser/decision.txt")
        tracking.log_artifact(note, "files")
        tracking.log_figure(figure, "plots/reward.png")
    run_id = run.info.run_id

    table = store.client.load_table(store.experiment_id, "samples/round-0.json", run_ids=[run_id])
    assert table[["prompt", "response", "reward"]].to_dict("records") == rows
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/reviser/decision.txt") == "decision: keep"
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/files/note.txt") == "kept"
    png = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots/reward.png", dst_path=tmp_path)
    assert Path(png).read_bytes().startswith(b"\x89PNG")


def test_resumed_pipeline_run_logs_into_the_same_parent(store):
    config, config_hash, recipe = {"rounds": 2}, fresh_hash(), {"alignflow.recipe": "spin"}
    with pytest.raises(RuntimeError):
        with tracking.start_pipeline_run(EXPERIMENT, "resume", config, config_hash, tags=recipe) as first:
            with tracking.start_child_run(first.info.run_id, "round-0", step=0):
                pass
            raise RuntimeError("machine went away")
    parent_id = first.info.run_id
    assert store.client.get_run(parent_id).info.status == "FAILED"

    assert tracking.find_run(EXPERIMENT, config_hash, recipe) == parent_id
    assert tracking.find_run(EXPERIMENT, config_hash, {"alignflow.recipe": "dpo"}) is None
    assert tracking.find_run(EXPERIMENT, fresh_hash()) is None

    with tracking.start_pipeline_run(
        EXPERIMENT, "resume", config, config_hash, resume_run_id=parent_id
    ) as resumed:
        assert resumed.info.run_id == parent_id
        with tracking.start_child_run(parent_id, "round-1", step=1) as child:
            tracking.log_metrics({"train/loss": 0.3}, step=1, run_id=child.info.run_id)

    assert store.client.get_run(parent_id).info.status == "FINISHED"
    children = children_of(store, parent_id)
    assert {name: run.data.tags["alignflow.round"] for name, run in children.items()} == {
        "round-0": "0",
        "round-1": "1",
    }


def test_resume_refuses_a_run_of_another_config_or_an_unknown_id(store):
    with tracking.start_pipeline_run(EXPERIMENT, "resume-check", {}, fresh_hash()) as run:
        pass
    with pytest.raises(UserError, match="config hash"):
        with tracking.start_pipeline_run(EXPERIMENT, "x", {}, fresh_hash(), resume_run_id=run.info.run_id):
            pass
    with pytest.raises(UserError, match="0123456789abcdef"):
        with tracking.start_pipeline_run(EXPERIMENT, "x", {}, fresh_hash(), resume_run_id="0123456789abcdef"):
            pass


def test_run_url_points_at_the_ui_or_says_how_to_start_it():
    assert (
        tracking.run_url("http://127.0.0.1:5000/", "3", "abc")
        == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    )
    default = tracking.run_url(tracking.default_tracking_uri(), "3", "abc")
    assert default.startswith("`alignflow ui`") and default.endswith("/#/experiments/3/runs/abc")
    hint = tracking.run_url("sqlite:////data/mlflow.db", "3", "abc")
    assert "mlflow ui" in hint and "--backend-store-uri sqlite:////data/mlflow.db" in hint
    assert hint.endswith("http://127.0.0.1:5000/#/experiments/3/runs/abc")
    assert tracking.run_url("databricks", "3", "abc") is None
