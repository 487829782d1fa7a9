"""A real Prefect flow (ephemeral API) whose two stages are cached by stage key."""

import shutil
from pathlib import Path

import anyio
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import FlowRunSort

from tasks.stage import Input, stage

# Every test runs flows through this session's Prefect API.
pytestmark = pytest.mark.integration

EXECUTIONS: list[str] = []


@stage("double")
def double(folder: Path, source: Input) -> None:
    EXECUTIONS.append("double")
    numbers = [int(x) for x in Path(source).read_text().split()]
    (folder / "out.txt").write_text(" ".join(str(2 * n) for n in numbers))


@stage("total")
def total(folder: Path, doubled: Input, offset: int) -> None:
    EXECUTIONS.append("total")
    numbers = [int(x) for x in (Path(doubled) / "out.txt").read_text().split()]
    (folder / "total.txt").write_text(str(sum(numbers) + offset))


@flow(name="two-stage-test")
def two_stage(source: str, run_dir: str, offset: int = 0, from_stage: str | None = None) -> int:
    run = Path(run_dir)
    doubled = double.run(run / "double", from_stage == "double", source=source)
    summed = total.run(run / "total", from_stage in ("double", "total"), doubled=doubled, offset=offset)
    return int((Path(summed) / "total.txt").read_text())


def _states_of_last_run() -> dict[str, str]:
    async def latest():
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            task_runs = await client.read_task_runs()
        return {r.name.rsplit("-", 1)[0]: r.state.name for r in task_runs if r.flow_run_id == flow_runs[0].id}

    return anyio.run(latest)


def test_rerun_reuses_and_changed_input_recomputes(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_HOME", str(tmp_path / "home"))  # stages of its own
    source = tmp_path / "numbers.txt"
    source.write_text("1 2 3")
    EXECUTIONS.clear()

    assert two_stage(str(source), str(tmp_path / "run")) == 12
    assert EXECUTIONS == ["double", "total"]
    assert (tmp_path / "run" / "total").is_symlink()

    # A new flow run with the same inputs: both stages come from Prefect's cache.
    assert two_stage(str(source), str(tmp_path / "run")) == 12
    assert EXECUTIONS == ["double", "total"]
    assert set(_states_of_last_run().values()) == {"Cached"}

    # A changed input recomputes both stages.
    source.write_text("1 2 3 4")
    assert two_stage(str(source), str(tmp_path / "run")) == 20
    assert EXECUTIONS == ["double", "total", "double", "total"]

    # A deleted output is rebuilt rather than trusted from the cache.
    shutil.rmtree((tmp_path / "run" / "total").resolve())
    assert two_stage(str(source), str(tmp_path / "run")) == 20
    assert EXECUTIONS[-1] == "total" and EXECUTIONS.count("double") == 2

    # --from-stage forces that stage and everything after it.
    assert two_stage(str(source), str(tmp_path / "run"), from_stage="double") == 20
    assert EXECUTIONS[-2:] == ["double", "total"]


def test_runs_share_stages_by_key_and_never_see_each_others_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_HOME", str(tmp_path / "home"))
    source = tmp_path / "numbers.txt"
    source.write_text("5 5")
    EXECUTIONS.clear()

    assert two_stage(str(source), str(tmp_path / "a"), offset=0) == 20
    # Another run whose second stage reads another setting: the first stage is shared.
    assert two_stage(str(source), str(tmp_path / "b"), offset=1) == 21
    assert EXECUTIONS == ["double", "total", "total"]
    assert (tmp_path / "a" / "double").resolve() == (tmp_path / "b" / "double").resolve()
    assert (tmp_path / "a" / "total").resolve() != (tmp_path / "b" / "total").resolve()

    # Deleting one run's folder leaves the other intact and resumable.
    shutil.rmtree(tmp_path / "b")
    assert two_stage(str(source), str(tmp_path / "a"), offset=0) == 20
    assert two_stage(str(source), str(tmp_path / "b"), offset=1) == 21
    assert EXECUTIONS == ["double", "total", "total"]


@stage("drop-bad-rows")
def drop_bad_rows(folder: Path, source: Input) -> dict:
    lines = Path(source).read_text().splitlines()
    (folder / "rows.txt").write_text("\n".join(line for line in lines if line.isdigit()))
    return {"skipped_rows": {"not a number": sum(not line.isdigit() for line in lines)}}


@flow(name="skipping-test")
def skipping(source: str, run_dir: str) -> str:
    return drop_bad_rows.run(Path(run_dir) / "rows", source=source)


def test_a_stage_that_skipped_rows_says_so_in_one_line(tmp_path, capsys):
    source = tmp_path / "rows.txt"
    source.write_text("1\ntwo\n3\nfour\n")
    out = Path(skipping(str(source), str(tmp_path / "run")))
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert lines == [f"stage drop-bad-rows (run/rows): skipped 2 rows (not a number: 2); see {out / 'manifest.json'}"]


SEEN_TAGS: list[list[str]] = []
LIMITED = "alignflow-test-limited"  # no other test's stages carry it


@stage("tagged", tags=("accelerator", LIMITED))
def tagged(folder: Path, n: int) -> None:
    from prefect.context import TaskRunContext

    SEEN_TAGS.append(sorted(TaskRunContext.get().task_run.tags))


@flow(name="tagged-test")
def tagged_flow(run_dir: str, n: int) -> None:
    tagged.run(Path(run_dir) / "tagged", n=n)


def test_a_stage_run_carries_only_its_tags_that_name_a_concurrency_limit(tmp_path, monkeypatch):
    """Prefect asks the API for a slot of every tag's limit, existing or not; a tag without one is left off."""
    monkeypatch.setenv("ALIGNFLOW_HOME", str(tmp_path / "home"))
    SEEN_TAGS.clear()
    tagged_flow(str(tmp_path / "run"), 1)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(f"tag:{LIMITED}", 1)
        try:
            tagged_flow(str(tmp_path / "run"), 2)  # a new flow run reads the limits anew
            assert client.read_global_concurrency_limit_by_name(f"tag:{LIMITED}").active_slots == 0
        finally:
            client.delete_global_concurrency_limit_by_name(f"tag:{LIMITED}")
    assert SEEN_TAGS == [[], [LIMITED]]
