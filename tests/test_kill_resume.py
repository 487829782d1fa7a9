"""SIGKILL in the middle of sampling: nothing is left running, and the rerun resumes from the finished shards."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pipeline_lib.config import config_hash, load_recipe
from pipeline_lib.store import read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
# Enough prompts for several 64-prompt shards, so a kill can land between them.
SETTINGS = ["suite.n_eval=384", "eval.max_new_tokens=40"]


def _alignflow(*args: str, **kwargs) -> subprocess.Popen:
    script = Path(sys.executable).with_name("alignflow")
    return subprocess.Popen([str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_during_sampling_leaves_no_process_and_resumes_from_shards(alignflow_home):
    run = _alignflow("run", RECIPE, *SETTINGS)
    shards = alignflow_home / "stages" / "generate-answers"
    deadline = time.monotonic() + 240
    while not list(shards.glob("*.partial/shard-00000.json")):
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, "sampling never wrote a shard"
        time.sleep(0.05)
    children = psutil.Process(run.pid).children(recursive=True)
    assert children, "the run should have started its private Prefect API"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)

    # The private Prefect API dies with its parent, even one killed with SIGKILL.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running after SIGKILL: {[p.cmdline()[:4] for p in alive]}"
    partial = next(shards.glob("*.partial"))
    finished_before = len(list(partial.glob("shard-*.json")))
    assert finished_before >= 1

    rerun = _alignflow("run", RECIPE, *SETTINGS)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out

    recipe = load_recipe(RECIPE, SETTINGS)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"
    sampling = read_manifest(run_dir / "round-0" / "eval-answers")["sampling"]
    assert sampling["shards_reused"] >= finished_before
    assert sampling["shards_total"] == 6 and sampling["n_samples"] == 384
    assert not partial.exists(), "scratch shards are removed once the stage is complete"
    assert os.path.isdir(run_dir / "round-0" / "eval-scores")
