"""orchestration: compare-methods contestants at once, on a local process pool or a local Ray cluster.

A second end-to-end test plays CEL's three games at once (configs/cel-ablation-tiny.yaml) onto the
games leaderboard.

The dependency graph and the bad address are unit tests; one end-to-end test
runs a comparison on the process pool, in stages no other test builds, and
checks that its two independent contestants overlapped in time in two worker
processes while they trained, and that the one naming ``@sft`` started after
``sft`` ended; then the same recipe on a local Ray (2 CPUs, started and
stopped by the run: its contestants in Ray workers) and in order give the
same leaderboard, and no process either runner started is left.
"""

import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest

from flows.cli import main
from methods.compare.config import MethodVariant
from methods.compare.variants import contestant_needs
from methods.orchestration import check_answers, remote_options, Cluster
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.orchestration import OrchestrationConfig
from pipeline_lib.core.servers import free_port

REPO = Path(__file__).resolve().parents[1]
COMPARE = str(REPO / "configs" / "compare-tiny.yaml")
# Two independent contestants and one that starts from the first one's model (no reviser: SEFT's would add minutes).
WITH_DEPENDENCY = (
    "compare.methods=[{label: sft, method: sft}, {label: spin, method: spin},"
    " {label: sft-again, method: sft, overrides: [model.ref=@sft]}]"
)
CEL_ABLATION = str(REPO / "configs" / "cel-ablation-tiny.yaml")
RAY = ["orchestration.task_runner=ray", "orchestration.ray.num_cpus=2"]
# Its own training rate: stages no other test builds, so the contestants overlap while they really train.
OWN = "train.lr=2.0e-3"


def _variants(*specs):
    return [MethodVariant(label=label, method=method, overrides=list(overrides)) for label, method, *overrides in specs]


def test_contestants_need_only_the_earlier_contestants_their_overrides_name():
    recipe = load_recipe(COMPARE, [])
    assert contestant_needs(recipe.compare.methods) == {"sft": set(), "spin": set(), "seft-ondare": {"sft"}}
    chain = _variants(("a", "sft"), ("b", "sft", "model.ref=@a"), ("c", "sft", "model.ref=@b", "train.lr=1e-3"))
    assert contestant_needs(chain) == {"a": set(), "b": {"a"}, "c": {"b"}}
    with pytest.raises(UserError, match=r"compare.methods\[a\].*names @b, which has not run before it"):
        contestant_needs(_variants(("a", "sft", "model.ref=@b"), ("b", "sft")))


def test_orchestration_is_optional_and_never_renames_a_run():
    plain = load_recipe(COMPARE, [])
    on_ray = load_recipe(COMPARE, ["orchestration.task_runner=ray", "orchestration.ray.address=10.0.0.1:6379"])
    assert plain.orchestration is None
    assert on_ray.orchestration == OrchestrationConfig(task_runner="ray", ray={"address": "10.0.0.1:6379"})
    assert config_hash(plain) == config_hash(on_ray)
    with pytest.raises(UserError, match="orchestration.task_runner"):
        load_recipe(COMPARE, ["orchestration.task_runner=dask"])


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["orchestration.ray.num_cpus=2"], "the ray settings need task_runner: ray"),
        ([*RAY, "orchestration.max_workers=3"], "max_workers sizes the local process pool"),
        ([*RAY, "orchestration.ray.address=10.0.0.1:6379"], "num_cpus sizes the local Ray"),
        (["orchestration.task_runner=ray", "orchestration.ray.timeout_s=5"], "timeout_s bounds the wait"),
    ],
)
def test_a_setting_the_chosen_runner_ignores_is_refused(overrides, says):
    with pytest.raises(UserError, match=says):
        load_recipe(COMPARE, overrides)


def test_orchestration_is_refused_where_nothing_would_run_at_once():
    # CEL plays its games in order within a run; a sweep runs them at once as compare-methods contestants.
    with pytest.raises(UserError, match="section 'orchestration' is only used by method"):
        load_recipe(REPO / "configs" / "cel-frozenlake-tiny.yaml", ["orchestration.task_runner=local"])
    with pytest.raises(UserError, match="no benchmark besides the suite: remove it"):
        load_recipe(REPO / "configs" / "sft-tiny.yaml", ["orchestration.task_runner=local"])


def test_gpus_are_asked_for_only_where_the_cluster_has_them():
    needs = {"num_cpus": 1, "num_gpus": 1}
    assert remote_options(Cluster(None, "ray", gpus=0), needs) == {"num_cpus": 1}
    assert remote_options(Cluster(None, "ray", gpus=4), needs) == needs
    assert remote_options(Cluster(None, "local"), needs) == {}


def test_an_address_that_does_not_answer_fails_in_one_line_within_its_timeout():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    with pytest.raises(UserError) as caught:
        check_answers(address, 1.5)
    assert time.monotonic() - began < 5
    message = str(caught.value)
    assert "\n" not in message and f"orchestration.ray.address {address!r} does not answer" in message
    with pytest.raises(UserError, match="does not answer"):
        check_answers(f"ray://127.0.0.1:{free_port()}", 0.5)


@pytest.mark.integration
def test_compare_methods_with_a_bad_ray_address_exits_naming_it(capsys):
    address = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    code = main(["compare-methods", COMPARE, "orchestration.task_runner=ray", f"orchestration.ray.address={address}",
                 "orchestration.ray.timeout_s=2"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"alignflow: error: orchestration.ray.address {address!r} does not answer" in err
    assert time.monotonic() - began < 120  # the Prefect API's start included, nothing like ray.init's minutes


def _run(capsys, *args) -> tuple[str, Path]:
    assert main(["compare-methods", COMPARE, WITH_DEPENDENCY, *args]) == 0
    out = capsys.readouterr().out
    run_dir = Path(re.search(r"^run folder:\s+(\S+)$", out, re.M).group(1))
    return out, run_dir


def _left(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def _prefect_servers() -> set[int]:
    """The Prefect API servers this process started (the session's own, and any ephemeral one of Prefect's)."""
    return {
        child.pid for child in psutil.Process().children(recursive=True)
        if "prefect.server.api.server:create_app" in " ".join(child.cmdline())
    }  # fmt: skip


@pytest.mark.integration
@pytest.mark.xdist_group("compare-tiny")
def test_contestants_run_at_once_in_processes_and_on_a_local_ray_cluster_with_the_sequential_leaderboard(capsys):
    # The process pool first, in stages no run has built: the contestants overlap while they really work.
    servers = _prefect_servers()
    _, run_dir = _run(capsys, OWN, "orchestration.task_runner=local")
    # The pool forwards its workers' events from a thread of its own, which must find the run's API and not
    # start an ephemeral server of Prefect's (where no UI shows those task runs, and which outlives a SIGKILL).
    assert _prefect_servers() == servers
    record = json.loads((run_dir / "orchestration.json").read_text())
    ran = record["contestants"]
    assert record["task_runner"] == "local"
    sft, spin, again = ran["sft"], ran["spin"], ran["sft-again"]
    # sft and spin need nothing of each other: they ran at once, in two processes of the pool.
    assert len({sft["pid"], spin["pid"], os.getpid()}) == 3
    assert sft["started_at"] < spin["ended_at"] and spin["started_at"] < sft["ended_at"]
    # sft-again starts from sft's model: it waited for it.
    assert again["started_at"] >= sft["ended_at"]
    assert _left([place["pid"] for place in ran.values()]) == []
    board = (run_dir / "leaderboard.md").read_text()

    # On a local Ray (the same run: orchestration renames nothing), each contestant in a Ray worker.
    _, same_dir = _run(capsys, OWN, *RAY)
    assert same_dir == run_dir
    record = json.loads((run_dir / "orchestration.json").read_text())
    ran = record["contestants"]
    assert record["task_runner"] == "ray" and record["started_here"] and record["ray_processes"]
    assert len({place["ray_worker"] for place in ran.values()} - {None}) >= 2
    assert (run_dir / "leaderboard.md").read_text() == board
    # Everything this run started of Ray has stopped: the cluster's processes and its workers.
    assert _left(record["ray_processes"] + [place["pid"] for place in ran.values()]) == []

    # In order, the same leaderboard.
    out_in_order, _ = _run(capsys, OWN)
    assert (run_dir / "leaderboard.md").read_text() == board
    assert "compare-methods: sft-again (sft)" in out_in_order


def test_game_and_suite_contestants_are_not_ranked_on_one_board():
    mixed = "compare.methods=[{label: sft, method: sft}, {label: lake, method: cel}]"
    with pytest.raises(UserError, match=r"sft and lake go on different leaderboards \(suite and games\)"):
        load_recipe(COMPARE, [mixed])
    with pytest.raises(UserError, match="compare.token_budget: game-playing contestants"):
        load_recipe(CEL_ABLATION, ["compare.token_budget=1000"])


@pytest.mark.integration
def test_cel_games_play_at_once_onto_the_games_leaderboard(capsys):
    from mlflow import MlflowClient

    assert main(["compare-methods", CEL_ABLATION]) == 0
    out = capsys.readouterr().out
    run_dir = Path(re.search(r"^run folder:\s+(\S+)$", out, re.M).group(1))
    games = {"frozen-lake": "frozen_lake", "sokoban": "sokoban", "minesweeper": "minesweeper"}
    ran = json.loads((run_dir / "orchestration.json").read_text())["contestants"]
    # No contestant names another: all three played at once, each in a process of its own.
    assert len({place["pid"] for place in ran.values()} | {os.getpid()}) == 4
    assert max(p["started_at"] for p in ran.values()) < min(p["ended_at"] for p in ran.values())
    for label, game in games.items():
        # Each contestant played its own game: its held-out episodes say which.
        episodes = (run_dir / label / "round-0" / "cel-evaluate" / "trajectories.jsonl").read_text().splitlines()
        assert {json.loads(line)["game"] for line in episodes} == {game}
    header, _, *rows = (run_dir / "leaderboard.md").read_text().splitlines()
    assert header.startswith("| method | held-out success | zero-shot success | learning success | invalid actions")
    assert sorted(row.split("|")[1].strip() for row in rows) == sorted(games)
    parent = re.search(r"^mlflow:\s+run (\w+)", out, re.M).group(1)
    logged = MlflowClient().get_run(parent).data.metrics
    for label in games:
        assert {f"leaderboard/{label}/success_rate", f"leaderboard/{label}/invalid_rate"} <= logged.keys()
    assert not any(name.endswith("/score") for name in logged), "no suite score on the games board"
