"""A round's evaluations at once (``orchestration`` in a method's recipe): the suite and each benchmark as
Prefect tasks, sharing the run's vLLM server, with the answers and judgments of a run in order.

The recipe checks need nothing; the end-to-end test runs the tiny evaluate
recipe with MT-Bench and a pairwise benchmark, judged by the tiny model, on
vLLM (the tiny model is policy and judge: one server for every job).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.environment import vllm_python
from processes import command_line

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
BENCHMARKS = (
    "eval.benchmarks=[{name: suite}, {name: mt_bench, limit: 2, max_new_tokens: 6},"
    " {name: pairwise, limit: 4, max_new_tokens: 6}]"
)
# Its own suite seed: stages no other test builds.
SETTINGS = [BENCHMARKS, "eval.judge.model=tiny-llama", "eval.judge.max_new_tokens=6", "suite.seed=31",
            "sampler.backend=vllm", "sampler.vllm.kv_cache_gib=1"]  # fmt: skip
AT_ONCE = ["orchestration.max_workers=3"]
# Each evaluation's last stage, as linked in round 0's folder.
OUTPUTS = ("generate-answers", "score", "mt-bench-answers", "mt-bench-judgments", "generate-answers-pairwise",
           "pairwise-judgments-pairwise")  # fmt: skip


def test_orchestration_in_a_method_recipe_needs_a_benchmark_and_renames_nothing():
    with pytest.raises(UserError, match="no benchmark besides the suite: remove it"):
        load_recipe(RECIPE, AT_ONCE)
    assert config_hash(load_recipe(RECIPE, [*SETTINGS, *AT_ONCE])) == config_hash(load_recipe(RECIPE, SETTINGS))


@pytest.mark.skipif(vllm_python() is None, reason="no vLLM environment: run `make setup-vllm`")
@pytest.mark.integration
@pytest.mark.xdist_group("vllm-replicas")
def test_a_rounds_evaluations_run_at_once_on_one_server_and_match_a_run_in_order(capsys, alignflow_home):
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    err = _run(capsys, *SETTINGS, *AT_ONCE)
    run_dir = alignflow_home / "runs" / f"evaluate-tiny-{config_hash(load_recipe(RECIPE, SETTINGS))[:10]}"
    round0 = run_dir / "round-0"
    at_once = {name: _content(round0 / name) for name in OUTPUTS}

    # Three jobs, each a task run in a thread of this process, and they overlapped in time.
    ran = json.loads((run_dir / "orchestration.json").read_text())["evaluations"]["evaluation/round-0"]
    assert set(ran) == {"suite", "mt_bench", "pairwise"}
    assert {r["pid"] for r in ran.values()} == {os.getpid()}
    assert len({r["thread"] for r in ran.values()}) == 3
    assert max(r["started_at"] for r in ran.values()) < min(r["ended_at"] for r in ran.values())
    # Policy and judge are one model: the jobs shared its one server, started once.
    served = re.findall(r"vllm: serving \S+ at (\S+) \((started|shared|kept warm)", err)
    assert [how for _, how in served].count("started") == 1, served
    assert "shared" in [how for _, how in served] and len({url for url, _ in served}) == 1, served

    # In order (--from-stage runs them one after another), from the first answers on: the same rows.
    err = _run(capsys, *SETTINGS, *AT_ONCE, "--from-stage", "generate-answers")
    assert "runs each round's evaluations one after another" in err
    assert {name: _content(round0 / name) for name in OUTPUTS} == at_once
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in ours and "vllm" in command_line(p)]
    assert not left, f"left running: {[p.pid for p in left]}"


def _run(capsys, *settings: str) -> str:
    """``alignflow run`` in this process; its stderr, where vLLM starts and orchestration notes are said."""
    from flows.cli import main

    assert main(["run", RECIPE, *settings]) == 0
    return capsys.readouterr().err


def _content(stage: Path) -> dict[str, list]:
    return {f.name: pq.read_table(f).to_pylist() for f in sorted(stage.glob("*.parquet"))}
