"""Interrupting a run in the middle of sampling: ctrl-C and SIGKILL.

Nothing may be left running, and a rerun resumes from the finished shards.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from flow_runs import start_run, stop_leftovers, stray_vllm_servers
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.store import read_manifest
from pipeline_lib.tracking import default_tracking_uri

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
SCRIPT = str(Path(sys.executable).with_name("alignflow"))


def _settings(n_eval: int, backend: str = "hf") -> list[str]:
    # Enough prompts for several 64-prompt shards, so an interrupt lands between them.
    return [f"suite.n_eval={n_eval}", "eval.max_new_tokens=40", f"sampler.backend={backend}"]


def _wait_for_first_shard(run: subprocess.Popen, home: Path, log: Path) -> Path:
    deadline = time.monotonic() + 240
    while True:
        found = list((home / "stages" / "generate-answers").glob("*.partial/shard-00000.json"))
        if found:
            return found[0].parent
        assert run.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "sampling never wrote a shard"
        time.sleep(0.05)


def _parent_run_id(stdout: str) -> str:
    return next(line.split()[2] for line in stdout.splitlines() if line.startswith("mlflow:"))


pytestmark = pytest.mark.integration

VLLM = pytest.param(
    "sigkill", 384, "vllm",
    # With the other vLLM tests on one xdist worker: two CPU vLLM servers at once each claim both cores.
    marks=[pytest.mark.skipif(vllm_python() is None, reason="no vLLM environment: make setup-vllm"),
           pytest.mark.xdist_group("vllm")],
)  # fmt: skip


@pytest.mark.parametrize("how, n_eval, backend", [("ctrl-c", 320, "hf"), ("sigkill", 384, "hf"), VLLM])
def test_interrupt_during_sampling_leaves_no_process_and_resumes_from_shards(
    how, n_eval, backend, alignflow_home, tmp_path
):
    settings = _settings(n_eval, backend)
    log = tmp_path / "run.log"
    run = start_run(RECIPE, settings, log)
    try:
        partial = _wait_for_first_shard(run, alignflow_home, log)
        children = psutil.Process(run.pid).children(recursive=True)
        assert children, "the run should have started its private Prefect API"
        if backend == "vllm":
            assert stray_vllm_servers(alignflow_home), "the run should be sampling through its vLLM server"
        if how == "ctrl-c":
            os.killpg(run.pid, signal.SIGINT)  # what a terminal sends to the foreground group
            assert run.wait(timeout=120) == 130
            assert "Traceback" not in log.read_text()
            assert "rerun the same command to resume" in log.read_text()
        else:
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=30)
        # The private Prefect API ends with its parent, even one killed with SIGKILL.
        alive = stop_leftovers(children)
        assert not alive, f"left running: {[p.pid for p in alive]}"
    finally:
        if run.poll() is None:
            run.kill()
    finished_before = len(list(partial.glob("shard-*.json")))
    assert finished_before >= 1

    rerun = subprocess.run([SCRIPT, "run", RECIPE, *settings], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    recipe = load_recipe(RECIPE, settings)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"
    sampling = read_manifest(run_dir / "round-0" / "generate-answers")["sampling"]
    assert sampling["shards_reused"] >= finished_before
    assert sampling["n_samples"] == n_eval
    assert not partial.exists(), "scratch shards are removed once the stage is complete"
    stage_root = partial.parent
    assert not list(stage_root.glob(".*.tmp-*")), "the killed writer's temporary folder is swept"
    assert (run_dir / "round-0" / "score").is_dir()
    assert sampling["backend"] == backend
    if backend == "vllm":
        assert "sampler backend: vllm (sampler.backend=vllm" in rerun.stderr
        assert not stray_vllm_servers(alignflow_home), "no vLLM server outlives the rerun"
        tags = MlflowClient(tracking_uri=default_tracking_uri()).get_run(_parent_run_id(rerun.stdout)).data.tags
        assert tags["alignflow.sampler_backend"] == "vllm"
