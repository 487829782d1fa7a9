"""The evaluate recipe end to end with the tiny model: real Prefect, real MLflow, resume."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flow_runs import run_recipe, run_with_failure
from mlflow import MlflowClient

from pipeline_lib import tracking
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.store import read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
STAGE_TASKS = {"prepare-suite", "generate-answers", "score"}

pytestmark = pytest.mark.integration


def _run(capsys, *extra: str) -> tuple[str, dict[str, str]]:
    """stdout and stage -> state; the evaluate flow runs each stage once."""
    out, states = run_recipe(capsys, RECIPE, *extra)
    return out, {name: runs[0] for name, runs in states.items()}


@pytest.fixture(scope="module")
def first_run(alignflow_home):
    recipe = load_recipe(RECIPE)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"
    return recipe, run_dir


def test_run_tracks_resumes_and_recomputes_from_stage(capsys, first_run):
    recipe, run_dir = first_run
    out, states = _run(capsys)
    assert STAGE_TASKS <= set(states) and all(states[name] == "Completed" for name in STAGE_TASKS)
    assert "round" in out and "overall" in out and str(run_dir) in out

    # The run folder: every stage complete, with a manifest naming its key.
    answers = read_manifest(run_dir / "round-0" / "generate-answers")
    scores = read_manifest(run_dir / "round-0" / "score")
    assert answers["rows"] == recipe.suite.n_eval and scores["rows"] == recipe.suite.n_eval
    assert (run_dir / "config.yaml").is_file()

    # MLflow: one parent (tagged with its config hash) and a round-0 child with stepped metrics.
    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["model.ref"] == "tiny-llama"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert [c.info.run_name for c in children] == ["round-0"]
    history = client.get_metric_history(children[0].info.run_id, "eval/score")
    assert [m.step for m in history] == [0] and 0.0 <= history[0].value <= 1.0
    assert {"eval/pass_rate", "eval/length", "eval/score/arithmetic"} <= set(children[0].data.metrics)
    assert children[0].inputs.dataset_inputs[0].dataset.name == "suite-eval"
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/families_round0.png"} <= artifacts

    # A second identical run recomputes nothing and logs nothing twice.
    _, states = _run(capsys)
    assert all(states[name] == "Cached" for name in STAGE_TASKS)
    assert read_manifest(run_dir / "round-0" / "generate-answers")["started_at"] == answers["started_at"]
    again = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(again) == 1

    # A setting the stages do not read starts a new run folder but reuses every stage.
    _, states = _run(capsys, "train.lr=3e-5")
    assert all(states[name] == "Cached" for name in STAGE_TASKS)
    other = load_recipe(RECIPE, ["train.lr=3e-5"])
    other_dir = run_dir.parent / f"{other.name}-{config_hash(other)[:10]}"
    assert (other_dir / "round-0" / "generate-answers").resolve() == (run_dir / "round-0" / "generate-answers").resolve()

    # --from-stage score: scoring reruns, generation does not.
    _, states = _run(capsys, "--from-stage", "score")
    assert states["score"] == "Completed" and states["generate-answers"] == "Cached"
    assert read_manifest(run_dir / "round-0" / "score")["started_at"] > scores["started_at"]
    assert read_manifest(run_dir / "round-0" / "generate-answers")["started_at"] == answers["started_at"]


def test_user_error_inside_the_flow_is_one_line():
    # A hub id passes the early checks; only the download attempt inside the
    # flow fails. A real process, as a user runs it: what reaches the terminal.
    script = Path(sys.executable).with_name("alignflow")
    result = subprocess.run(
        [str(script), "run", RECIPE, "model.ref=nobody/no-such-model"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "nobody/no-such-model" in errors[0]


def test_a_run_that_failed_in_a_late_stage_resumes_there(capsys, first_run):
    # Its own settings, its own suite included, so nothing is cached from the other tests and the
    # first test above finds every stage of the default recipe still to build, whichever runs first.
    settings = ["eval.max_new_tokens=6", "suite.seed=2"]
    failed = run_with_failure(RECIPE, settings, "score", timeout=300)
    assert failed.returncode != 0
    assert "failure injected into stage 'score'" in failed.stderr
    assert "rerun the same command to resume" in failed.stderr

    recipe = load_recipe(RECIPE, settings)
    run_dir = first_run[1].parent / f"{recipe.name}-{config_hash(recipe)[:10]}"
    answers = read_manifest(run_dir / "round-0" / "generate-answers")
    assert answers is not None and not (run_dir / "round-0" / "score").exists()

    _, states = _run(capsys, *settings)
    assert states["generate-answers"] == "Cached" and states["prepare-suite"] == "Cached"
    assert states["score"] == "Completed"
    assert read_manifest(run_dir / "round-0" / "generate-answers")["started_at"] == answers["started_at"]
