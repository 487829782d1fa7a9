"""SEFT end to end with the tiny model: real Prefect, real MLflow, caching, resume after a failure."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from flow_runs import run_recipe, run_with_failure
from mlflow import MlflowClient

from flows.cli import main
from pipeline_lib import tracking
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.store import read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "seft-tiny.yaml")
OWN_EXPERIMENT = ("tracking.experiment=alignflow-seft-flow-tests",)
# Runs of configs/seft-tiny.yaml: on one xdist worker, so that they (and compare-tiny, which
# shares its reviser settings) train the reviser once per worker home, not once per test.
SEFT_TINY = pytest.mark.xdist_group("seft-tiny")
ROUND_LINKS = ["prepare-suite-pool", "sample-policy", "revise", "select-targets", "train-policy", "generate-answers", "score"]
SHARED_LINKS = ["prepare-suite-eval", "prepare-suite-reviser", "sample-policy", "score-samples",
                "build-reviser-data", "warmup-reviser", "train-reviser"]  # fmt: skip


def _run(capsys, *extra: str) -> tuple[str, dict[str, list[str]]]:
    return run_recipe(capsys, RECIPE, *extra)


def _run_dir(alignflow_home: Path, overrides=()) -> tuple:
    recipe = load_recipe(RECIPE, list(overrides))
    return recipe, alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"


@pytest.mark.integration
@SEFT_TINY
def test_two_rounds_end_to_end_then_cached(capsys, alignflow_home):
    # An MLflow experiment of its own: the parent run and its children are this test's alone, whatever
    # other run of this config (--from-stage below) logged before it. Stages read no tracking setting.
    recipe, run_dir = _run_dir(alignflow_home, OWN_EXPERIMENT)
    out, states = _run(capsys, *OWN_EXPERIMENT)

    # Every stage ran, each round's stages once per round.
    assert len(states["sample-policy"]) == 3 and len(states["revise"]) == 2 and len(states["train-policy"]) == 2
    # The reviser is trained once, here or by an earlier run with the same reviser settings
    # (configs/compare-tiny.yaml shares them on purpose).
    assert len(states["generate-answers"]) == 3 and len(states["train-reviser"]) == 1
    for link in SHARED_LINKS:
        assert read_manifest(run_dir / "shared" / link) or read_manifest(run_dir / "round-0" / link), link
    for k in (1, 2):
        for link in ROUND_LINKS:
            assert read_manifest(run_dir / f"round-{k}" / link) is not None, (k, link)

    # The revise stage parsed every output: decisions plus malformed cover all samples.
    revise = read_manifest(run_dir / "round-1" / "revise")
    n_samples = recipe.seft.pool_prompts * recipe.sampler.n
    assert sum(revise["decisions"].values()) + revise["malformed"] == revise["rows"] == n_samples
    targets = read_manifest(run_dir / "round-1" / "select-targets")
    assert targets["accepted_decisions"] == ["none", "minor"]
    assert targets["accepted"] == sum(targets["accepted_by_decision"].values()) > 0
    assert targets["accepted_by_decision"]["major"] == 0
    assert read_manifest(run_dir / "round-2" / "select-targets")["accepted_decisions"] == ["none", "minor", "major"]
    assert (run_dir / "round-1" / "train-policy").resolve() != (run_dir / "round-2" / "train-policy").resolve()
    # Each round draws new prompts from the pool.
    pools = [
        pq.read_table(run_dir / f"round-{k}" / "prepare-suite-pool" / "items.parquet").column("id").to_pylist() for k in (1, 2)
    ]
    assert len(pools[0]) == len(pools[1]) == recipe.seft.pool_prompts and not set(pools[0]) & set(pools[1])
    data = read_manifest(run_dir / "shared" / "build-reviser-data")
    assert set(data["sources"]) == {"suite", "hh-rlhf-harmless-base-test"}

    # The console: a per-round table with decisions and loss, then where to look.
    table = out[out.index("round") :].splitlines()
    assert table[0].split()[:4] == ["round", "score", "pass", "length"] and "loss" in table[0]
    assert [line.split()[0] for line in table[1:4]] == ["0", "1", "2"]
    assert "mlflow:" in out and "prefect:" in out

    # MLflow: parent with stepped metrics per round, children round-0..2 and reviser.
    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(parent_id, "eval/score")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(parent_id, "train/loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(parent_id, "revise/none")] == [1, 2]
    assert "eval/score_by_round.png" in {a.path for a in client.list_artifacts(parent_id, "eval")}
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"round-0", "round-1", "round-2", "reviser"}
    round_1 = by_name["round-1"]
    assert {"eval/score", "eval/pass_rate", "eval/length", "revise/malformed", "select/accepted", "train/loss"} <= set(
        round_1.data.metrics
    )
    assert {d.dataset.name for d in round_1.inputs.dataset_inputs} == {"suite-eval", "sft-targets-round1"}
    assert "revisions_round1.json" in {a.path for a in client.list_artifacts(round_1.info.run_id)}
    assert {d.dataset.name for d in by_name["reviser"].inputs.dataset_inputs} == {"reviser-warmup", "reviser-adaptive"}

    # The same command again recomputes no stage and logs no round twice.
    _, states = _run(capsys, *OWN_EXPERIMENT)
    stage_states = {name: s for name, s in states.items() if not name.startswith(("log-", "provision"))}
    assert all(set(s) == {"Cached"} for s in stage_states.values()), stage_states
    again = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(again) == 4
    assert len(client.get_metric_history(parent_id, "eval/score")) == 3


@pytest.mark.integration
@SEFT_TINY
def test_from_stage_recomputes_that_stage_and_everything_after(capsys, alignflow_home):
    _, run_dir = _run_dir(alignflow_home)
    _run(capsys)  # finished (or cached from the test above)
    before = {link: read_manifest(run_dir / "round-1" / link)["started_at"] for link in ROUND_LINKS}
    _, states = _run(capsys, "--from-stage", "select-targets")
    # Before round 1's select-targets: reused. From there on, round 2 included: recomputed.
    assert sorted(states["revise"]) == ["Cached", "Completed"]
    assert sorted(states["sample-policy"]) == ["Cached", "Cached", "Completed"]
    assert set(states["train-reviser"]) == {"Cached"} and states["generate-answers"].count("Cached") == 1
    assert set(states["select-targets"]) == {"Completed"} and set(states["train-policy"]) == {"Completed"}
    after = {link: read_manifest(run_dir / "round-1" / link)["started_at"] for link in ROUND_LINKS}
    assert after["revise"] == before["revise"] and after["sample-policy"] == before["sample-policy"]
    assert after["select-targets"] > before["select-targets"] and after["train-policy"] > before["train-policy"]


@pytest.mark.integration
@SEFT_TINY
def test_failure_in_training_resumes_without_resampling_or_revising(capsys, alignflow_home):
    # Settings of its own, so that the policy stages are not cached from the
    # other tests; LoRA, so that merged adapters feed the next round too.
    settings = ["train.mode=lora", "train.lr=1e-2"]
    failed = run_with_failure(RECIPE, settings, "train-policy", timeout=600)
    assert failed.returncode != 0, failed.stderr[-2000:]
    assert "failure injected into stage 'train-policy'" in failed.stderr
    _, run_dir = _run_dir(alignflow_home, settings)
    samples = read_manifest(run_dir / "round-1" / "sample-policy")
    revisions = read_manifest(run_dir / "round-1" / "revise")
    assert samples and revisions and not (run_dir / "round-1" / "train-policy").exists()

    _, states = _run(capsys, *settings)
    # Round 1's sampling and revision were reused, not executed again; training ran and the run finished.
    # Task-run states: round 1's revise and both earlier samplings are Cached; only round 2 runs them.
    assert sorted(states["revise"]) == ["Cached", "Completed"]
    assert sorted(states["sample-policy"]) == ["Cached", "Cached", "Completed"]
    assert read_manifest(run_dir / "round-1" / "sample-policy")["started_at"] == samples["started_at"]
    assert read_manifest(run_dir / "round-1" / "revise")["started_at"] == revisions["started_at"]
    assert "Completed" in states["train-policy"]
    assert read_manifest(run_dir / "round-2" / "score") is not None
    trained = read_manifest(run_dir / "round-1" / "train-policy")["train"]
    assert trained["mode"] == "lora" and trained["lora_merged"]
    assert not list((run_dir / "round-1" / "train-policy").glob("adapter_*"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("seft.accept=[[none, big]]", "seft.accept.0.1"),
        ("reviser.tau_none=0.9", "tau_none (0.9) must not exceed tau_major"),
        ("seft.pool_prompts=100", "suite.n_train (36) must cover reviser.n_prompts + seft.pool_prompts × seft.rounds"),
    ],
)
def test_bad_seft_settings_are_one_line_errors(capsys, override, message):
    assert main(["run", RECIPE, override]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.integration
@SEFT_TINY
def test_sigkill_during_round_2_training_resumes_at_that_stage(capsys, alignflow_home, tmp_path):
    # Long enough training that the kill lands inside it; settings of its own.
    settings = ["train.epochs=15"]
    log = tmp_path / "run.log"
    script = Path(sys.executable).with_name("alignflow")
    with open(log, "w") as out:
        run = subprocess.Popen(
            [str(script), "run", RECIPE, *settings], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 600
        while "stage train-policy (round-2/train-policy): running" not in log.read_text():
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "round-2 training never started"
            time.sleep(0.1)
        time.sleep(1.0)
        children = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {[p.pid for p in alive]}"
    finally:
        if run.poll() is None:
            run.kill()
    _, run_dir = _run_dir(alignflow_home, settings)
    assert not (run_dir / "round-2" / "train-policy").exists()
    finished = {link: read_manifest(run_dir / "round-2" / link)["started_at"] for link in ("sample-policy", "revise")}

    out, states = _run(capsys, *settings)
    assert sorted(states["train-policy"]) == ["Cached", "Completed"]
    assert set(states["revise"]) == {"Cached"} and set(states["sample-policy"]) == {"Cached"}
    assert {link: read_manifest(run_dir / "round-2" / link)["started_at"] for link in finished} == finished
    assert [line.split()[0] for line in out[out.index("round") :].splitlines()[1:4]] == ["0", "1", "2"]
