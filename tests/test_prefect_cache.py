"""A real Prefect flow (ephemeral API) whose two stages are cached by stage key."""

from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client

from pipeline_lib.store import build_stage, cache_key, digest_path
from tasks.stage import run_stage, stage_task

EXECUTIONS: list[str] = []


@stage_task("double")
def double(out_dir: str, key: str, force: bool, source: str) -> str:
    def build(folder: Path):
        EXECUTIONS.append("double")
        numbers = [int(x) for x in Path(source).read_text().split()]
        (folder / "out.txt").write_text(" ".join(str(2 * n) for n in numbers))

    return str(build_stage(Path(out_dir), "double", key, build, force=force))


@stage_task("total")
def total(out_dir: str, key: str, force: bool, doubled: str) -> str:
    def build(folder: Path):
        EXECUTIONS.append("total")
        numbers = [int(x) for x in (Path(doubled) / "out.txt").read_text().split()]
        (folder / "total.txt").write_text(str(sum(numbers)))

    return str(build_stage(Path(out_dir), "total", key, build, force=force))


@flow(name="two-stage-test")
def two_stage(source: str, run_dir: str, from_stage: str | None = None) -> int:
    run = Path(run_dir)
    doubled_key = cache_key("double", "cfg", {"source": digest_path(source)})
    doubled = run_stage(double, run / "double", doubled_key, force=from_stage == "double", source=source)
    total_key = cache_key("total", "cfg", {"doubled": digest_path(doubled)})
    summed = run_stage(total, run / "total", total_key, force=from_stage in ("double", "total"), doubled=doubled)
    return int((Path(summed) / "total.txt").read_text())


async def _task_states(flow_run_id) -> dict[str, str]:
    async with get_client() as client:
        runs = await client.read_task_runs()
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs if r.flow_run_id == flow_run_id}


def _states_of_last_run() -> dict[str, str]:
    import anyio
    from prefect.client.schemas.sorting import FlowRunSort

    async def latest():
        async with get_client() as client:
            runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            return await _task_states(runs[0].id)

    return anyio.run(latest)


def test_rerun_reuses_and_changed_input_recomputes(tmp_path):
    source = tmp_path / "numbers.txt"
    source.write_text("1 2 3")
    EXECUTIONS.clear()

    assert two_stage(str(source), str(tmp_path / "run")) == 12
    assert EXECUTIONS == ["double", "total"]

    # A new flow run with the same inputs: both stages come from Prefect's cache.
    assert two_stage(str(source), str(tmp_path / "run")) == 12
    assert EXECUTIONS == ["double", "total"]
    assert set(_states_of_last_run().values()) == {"Cached"}

    # A changed input recomputes both stages.
    source.write_text("1 2 3 4")
    assert two_stage(str(source), str(tmp_path / "run")) == 20
    assert EXECUTIONS == ["double", "total", "double", "total"]

    # A deleted output is rebuilt rather than trusted from the cache.
    import shutil

    shutil.rmtree(tmp_path / "run" / "total")
    assert two_stage(str(source), str(tmp_path / "run")) == 20
    assert EXECUTIONS[-1] == "total" and EXECUTIONS.count("double") == 2

    # --from-stage forces that stage and everything after it.
    assert two_stage(str(source), str(tmp_path / "run"), from_stage="double") == 20
    assert EXECUTIONS[-2:] == ["double", "total"]
