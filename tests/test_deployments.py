"""Deployments: a real `prefect server` on loopback, `alignflow serve`, a failed run retried as from the UI.

The retry goes through `prefect flow-run retry`, which sets the same
AwaitingRetry state the UI's Retry button sets; the served runner picks the
run up again. Every stage finished before the failure must be reused (its
output untouched, its task run Cached), inside the round subflows too.
"""

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import mlflow
import pytest
import yaml
from prefect.client.orchestration import get_client

from flow_runs import stage_of, task_runs
from flows.cli import main
from flows.serve import build_deployments, load_serve_file
from methods import METHODS
from pipeline_lib.core.servers import free_port, stop_group, wait_healthy

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "seft-tiny.yaml"
BIN = Path(sys.executable).parent
FAILING_STAGE = "train-policy"
# Finished before round 1's training failed; none may be built again.
FINISHED_STAGES = {
    "prepare-suite", "prepare-data", "generate-answers", "score", "sample-policy", "score-samples",
    "build-reviser-data", "warmup-reviser", "train-reviser", "revise", "select-targets",
}  # fmt: skip
ACCELERATOR_STAGES = {"generate-answers", "sample-policy", "warmup-reviser", "train-reviser", "revise", "train-policy"}


def test_the_shipped_deployments_file_validates_and_schedules_nightly_seft():
    spec = load_serve_file(REPO / "deployments" / "deployments.yaml")
    deployments = {(d.flow_name, d.name): d for d in build_deployments(spec)}
    nightly = deployments["seft", "nightly"]
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert nightly.parameters["recipe"] == str(REPO / "configs" / "seft.yaml")
    assert "seft.rounds=3" in nightly.parameters["overrides"]
    # Every registered method is served on demand, with its example recipe.
    assert {(METHODS[m].load_flow().name, "default") for m in METHODS} <= set(deployments)
    assert spec.concurrency == {"accelerator": 1}
    # Every flow must load from its entrypoint, as a worker would load it.
    for deployment in deployments.values():
        path, attribute = deployment.entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, attribute).name == deployment.flow_name, deployment.entrypoint


@pytest.mark.parametrize(
    "text, message",
    [
        ("every_method: false\ndeployments: []", "serves nothing"),
        ("deployments: [{name: x, recipe: configs/seft.yaml, cron: 1}]", "deployments.0.cron"),
        ("limit: 0\ndeployments: [{name: x, recipe: configs/seft.yaml}]", "limit"),
        ("deployments: [{name: x, recipe: configs/nope.yaml}]", "nope.yaml"),
        ("deployments: [{name: x, recipe: configs/seft.yaml, overrides: [seft.rounds=0]}]", "seft.rounds"),
    ],
)
def test_bad_deployments_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "deployments.yaml"
    path.write_text(text)
    assert main(["serve", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_without_a_server_says_how_to_start_one(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Not the tests' private API: a user's shell with no server configured.
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(["serve"]) == 2
    assert "alignflow ui" in capsys.readouterr().err


def _environment(home: Path, api_url: str | None) -> dict[str, str]:
    """The test session's environment, pointed at a home of its own (so no stage is already cached)."""
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "ALIGNFLOW_"))}
    env.update(ALIGNFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env.update(PREFECT_API_URL=api_url, PREFECT_RUNNER_POLL_FREQUENCY="1")
    return env


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _start_prefect_server(tmp_path: Path, home: Path) -> tuple[subprocess.Popen, str, Path]:
    """A real `prefect server` on a free loopback port, recording into ``home``: the process, its API URL, its log."""
    port = free_port()
    log = tmp_path / "server.log"
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    return _start(command, _environment(home, None), log), f"http://127.0.0.1:{port}/api", log


def _api(call):
    async def run():
        async with get_client() as client:
            return await call(client)

    return anyio.run(run)


def _wait_for(what: str, check, timeout: float, *processes: tuple[subprocess.Popen, Path]):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for process, log in processes:
            assert process.poll() is None, f"{log.name} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _final_state(flow_run_id):
    state = _api(lambda c: c.read_flow_run(flow_run_id)).state
    return state if state and state.is_final() else None


def _stage_runs(flow_run_id) -> list:
    """Stage task runs of the flow run and of its round subflows, every attempt."""
    return [run for run in task_runs(flow_run_id) if "/" in run.name]


def _manifests(home: Path) -> dict[str, float]:
    """Every finished stage output -> when it was built."""
    found = {}
    for manifest in (home / "stages").glob("*/*/manifest.json"):
        found[str(manifest.parent)] = json.loads(manifest.read_text())["started_at"]
    return found


@pytest.mark.integration
def test_a_failed_deployment_run_retried_from_the_api_resumes_without_recomputing(tmp_path):
    home = tmp_path / "home"
    serve_log = tmp_path / "serve.log"
    server, api_url, server_log = _start_prefect_server(tmp_path, home)
    serve = None
    try:
        assert wait_healthy(f"{api_url}/health", server, 120), server_log.read_text()[-3000:]
        from prefect.settings import PREFECT_API_URL, temporary_settings

        deployments = tmp_path / "deployments.yaml"
        deployments.write_text(
            yaml.safe_dump(
                {
                    "limit": 1,
                    "concurrency": {"accelerator": 1},
                    "deployments": [{"name": "retry-test", "recipe": str(RECIPE)}],
                }
            )
        )
        broken = tmp_path / "broken"
        broken.touch()
        env = _environment(home, api_url) | {"ALIGNFLOW_FAIL_STAGE": FAILING_STAGE, "ALIGNFLOW_FAIL_WHILE": str(broken)}
        serve = _start([str(BIN / "alignflow"), "serve", "--file", str(deployments)], env, serve_log)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            deployment = _wait_for(
                "the deployment",
                lambda: _deployment(_api, "seft/retry-test"),
                180,
                (server, server_log),
                (serve, serve_log),
            )
            limit = _api(lambda c: c.read_global_concurrency_limit_by_name("tag:accelerator"))
            assert limit.limit == 1

            flow_run = _api(lambda c: c.create_flow_run_from_deployment(deployment.id))
            failed = _wait_for("the first attempt", lambda: _final_state(flow_run.id), 600, (serve, serve_log))
            assert failed.is_failed(), failed
            built_before = _manifests(home)
            first = _stage_runs(flow_run.id)
            finished = {run.name for run in first if run.state.is_completed()}
            assert {stage_of(name) for name in finished} == FINISHED_STAGES
            assert {run.name for run in first if run.state.is_failed()} == {f"{FAILING_STAGE}/round-1"}

            broken.unlink()  # the cause is fixed
            retried_at = time.time()
            retry = subprocess.run(
                [str(BIN / "prefect"), "flow-run", "retry", str(flow_run.id)],
                env=_environment(home, api_url),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert retry.returncode == 0, retry.stdout + retry.stderr
            done = _wait_for("the retried run", lambda: _final_state(flow_run.id), 600, (serve, serve_log))
            assert done.is_completed(), f"{done}\n{serve_log.read_text()[-4000:]}"

            resumed = _api(lambda c: c.read_flow_run(flow_run.id))
            assert resumed.run_count == 2  # the same flow run, run again, not a new one
            second = [run for run in _stage_runs(flow_run.id) if run.created.timestamp() >= retried_at - 1]
            states = {run.name: run.state.name for run in second}
            reused = {name: state for name, state in states.items() if name in finished}
            assert set(reused) == finished and set(reused.values()) == {"Cached"}, states
            # Inside the first round's subflow too: its samples, revisions and targets.
            assert {"sample-policy/round-1", "revise/round-1", "select-targets/round-1"} <= set(reused)
            assert states[f"{FAILING_STAGE}/round-1"] == "Completed"
            assert states[f"{FAILING_STAGE}/round-2"] == "Completed"
            built_after = _manifests(home)
            assert {k: built_after[k] for k in built_before} == built_before, "a finished stage was built again"
            assert len(built_after) > len(built_before)
            # The stages that hold the accelerator took slots of its limit, and gave them all back.
            accelerated = {stage_of(run.name) for run in _stage_runs(flow_run.id) if "accelerator" in run.tags}
            assert accelerated == ACCELERATOR_STAGES
            limit = _api(lambda c: c.read_global_concurrency_limit_by_name("tag:accelerator"))
            assert limit.active_slots == 0
            _assert_linked(home, flow_run.id)
    finally:
        for process in (serve, server):
            if process is not None:
                stop_group(process)


def _deployment(api, name: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return api(lambda c: c.read_deployment_by_name(name))
    except ObjectNotFound:
        return None


def _assert_linked(home: Path, flow_run_id) -> None:
    """The flow run and the MLflow parent run name each other; the summary artifact is there."""
    flow_run = _api(lambda c: c.read_flow_run(flow_run_id))
    tag = next(t for t in flow_run.tags if t.startswith("mlflow-run:"))
    mlflow_run_id = tag.split(":", 1)[1]
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == str(flow_run_id)
    assert run.data.tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{flow_run_id}")
    assert [m.step for m in client.get_metric_history(mlflow_run_id, "eval/score")] == [0, 1, 2]

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = _api(
        lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    )
    by_key = {a.key: a for a in artifacts}
    assert mlflow_run_id in by_key["mlflow-run"].data
    summary = by_key["run-summary"].data
    assert "| round | score | pass | length |" in summary and "\n| 2 |" in summary
    assert len(json.loads(by_key["rounds"].data)) == 3
