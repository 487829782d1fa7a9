"""Running `alignflow run` (in-process or as a process) and reading back what Prefect recorded about it."""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import anyio
import psutil
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterParentTaskRunId,
)
from prefect.client.schemas.sorting import FlowRunSort

from flows.cli import main


def task_runs(flow_run_id) -> list:
    """Every task run of a flow run and of its round subflows, every attempt."""

    async def read():
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *(child.id for child in children)]
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))

    return anyio.run(read)


def task_states(flow_run_id: str) -> dict[str, list[str]]:
    """Stage name -> the states of its task runs in a flow run and its round subflows (one per round)."""
    # Prefect records task runs from events, asynchronously: right after a flow
    # returns, a task run may not have its state yet.
    for _ in range(40):
        runs = task_runs(flow_run_id)
        if all(run.state is not None for run in runs):
            break
        time.sleep(0.25)
    states = defaultdict(list)
    for run in runs:
        if run.state and run.state.state_details.child_flow_run_id:
            continue  # the placeholder of a round subflow in its parent, not a task
        states[stage_of(run.name)].append(run.state.name if run.state else "Pending")
    return states


def stage_of(task_run_name: str) -> str:
    """``train-policy/round-1`` (a stage) or ``log-round-a1b`` (another task) -> the task's name."""
    return task_run_name.split("/")[0] if "/" in task_run_name else task_run_name.rsplit("-", 1)[0]


def run_recipe(capsys, recipe: str, *extra: str) -> tuple[str, dict[str, list[str]]]:
    """Run a recipe through the CLI; return its stdout and its task-run states."""
    assert main(["run", recipe, *extra]) == 0
    out = capsys.readouterr().out
    flow_run_id = next(line.split()[3] for line in out.splitlines() if line.startswith("prefect:"))
    return out, task_states(flow_run_id)


def run_with_failure(recipe: str, settings: list[str], stage: str, timeout: int) -> subprocess.CompletedProcess:
    """Run a recipe as a user would (a real process) with ``stage`` made to fail by the test switch."""
    script = Path(sys.executable).with_name("alignflow")
    return subprocess.run(
        [str(script), "run", recipe, *settings],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ALIGNFLOW_FAIL_STAGE": stage},
    )


def start_run(recipe: str, settings: list[str], log: Path) -> subprocess.Popen:
    """`alignflow run recipe settings` as a user's process, output to ``log``, with a private Prefect API of
    its own (no PREFECT_API_URL): the tests that interrupt it check that the API ends with it."""
    script = Path(sys.executable).with_name("alignflow")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(log, "w") as out:
        # Its own process group, as a command started from a terminal has, and
        # SIGINT handled as in a terminal even when pytest itself was started
        # in the background, where shells leave SIGINT ignored for children.
        return subprocess.Popen(
            [str(script), "run", recipe, *settings],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def stop_leftovers(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Wait for processes to end; kill (by PID) and return any still alive."""
    _, alive = psutil.wait_procs(processes, timeout=30)
    for process in alive:
        process.kill()
    return alive


def last_flow_run(parameters: dict):
    """The newest top-level flow run called with ``parameters`` (others may differ), read from Prefect's database.

    A subprocess records its runs through this session's API (conftest exports
    it), or through a private API of its own on the same database in
    ``$ALIGNFLOW_HOME/prefect`` (``start_run``): for `alignflow run`, pass the
    recipe path and the overrides.
    """

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True)),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )

    wanted = dict(parameters)
    if "recipe" in wanted:
        # `alignflow run` hands the flow the recipe it parsed; Prefect stores it as JSON.
        from methods.recipe import load_recipe

        wanted["recipe"] = load_recipe(wanted["recipe"], wanted.pop("overrides", [])).to_dict()
    return next(run for run in anyio.run(read) if {name: run.parameters.get(name) for name in wanted} == wanted)


def stray_vllm_servers(home: Path) -> list[psutil.Process]:
    """vLLM servers serving a model from ``home`` that this test process did not start itself."""
    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "vllm" in cmdline and str(home) in cmdline and process.info["ppid"] != os.getpid():
            found.append(process)
    return found
