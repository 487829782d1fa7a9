"""Running `alignflow run` in-process and reading back what Prefect recorded about it."""

from collections import defaultdict

import anyio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.cli import main


def task_states(flow_run_id: str) -> dict[str, list[str]]:
    """Stage name -> the states of its task runs in one flow run (a stage may run once per round)."""

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    states = defaultdict(list)
    for run in anyio.run(read):
        states[run.name.rsplit("-", 1)[0]].append(run.state.name)
    return states


def run_recipe(capsys, recipe: str, *extra: str) -> tuple[str, dict[str, list[str]]]:
    """Run a recipe through the CLI; return its stdout and its task-run states."""
    assert main(["run", recipe, *extra]) == 0
    out = capsys.readouterr().out
    flow_run_id = next(line.split()[3] for line in out.splitlines() if line.startswith("prefect:"))
    return out, task_states(flow_run_id)
