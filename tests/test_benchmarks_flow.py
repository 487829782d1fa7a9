"""eval.benchmarks end to end at tiny size: the tiny model answers and judges, through Prefect and MLflow."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from methods.recipe import load_recipe
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.store import read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
# Short answers and judgments: the tiny random model's words are noise either way.
BENCHMARKS = (
    "eval.benchmarks=[{name: suite}, {name: mt_bench, limit: 2, max_new_tokens: 6},"
    " {name: pairwise, limit: 4, max_new_tokens: 6}]"
)
SETTINGS = [BENCHMARKS, "eval.judge.model=tiny-llama", "eval.judge.max_new_tokens=6", "suite.seed=21"]
JUDGING = ("mt-bench-judgments", "pairwise-judgments")

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_data")]


def _round0(run_dir: Path, stage: str) -> dict:
    name = "pairwise-judgments-pairwise" if stage == "pairwise-judgments" else stage
    return read_manifest(run_dir / "round-0" / name)


def test_benchmarks_log_metrics_tables_and_rejudge_only_what_changed(capsys):
    recipe = load_recipe(RECIPE, SETTINGS)
    out, states = run_recipe(capsys, RECIPE, *SETTINGS)
    assert all(states[s] == ["Completed"] for s in ("mt-bench-answers", *JUDGING))
    assert "mtbench" in out and "lc win" in out and "pairwise win rate, round 0:" in out

    client = MlflowClient(tracking.default_tracking_uri())
    parent = client.get_run(tracking.find_run(recipe.tracking.experiment, config_hash(recipe)))
    (child,) = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    metrics = child.data.metrics
    # The tiny judge never writes [[rating]]: every judgment is a counted parse failure, rated by the fallback.
    assert metrics["mt_bench/judgments"] == 4 and metrics["mt_bench/parse_failures"] == 4
    assert metrics["mt_bench/fallback_ratings"] == 4 and 1 <= metrics["mt_bench/score"] <= 10
    # Log-probability preferences always parse; both orders of 4 prompts.
    assert metrics["pairwise/judgments"] == 8 and metrics["pairwise/parse_failures"] == 0
    assert 0 <= metrics["pairwise/win_rate"] <= 1 and 0 <= metrics["pairwise/lc_win_rate"] <= 1
    assert metrics["pairwise/win_rate_low"] <= metrics["pairwise/win_rate"] <= metrics["pairwise/win_rate_high"]
    assert {"mt_bench/score", "pairwise/win_rate"} <= set(parent.data.metrics)  # stepped by round on the parent too
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"mt_bench_judgments_round0.json", "pairwise_judgments_round0.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(child.info.run_id, "pairwise_judgments_round0.json")).read_text())
    assert {"instruction", "model_output", "baseline_output", "judge_output", "preference"} <= set(table["columns"])
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "benchmarks")}
    assert plots == {"benchmarks/mt_bench_by_round.png", "benchmarks/pairwise_by_round.png"}
    params = parent.data.params
    assert params["benchmark.mt_bench.judge"] == "tiny-llama" and "benchmark.pairwise.templates.alpaca_eval" in params

    run_dir = Path(out.split("run folder:")[1].split()[0])
    first = {s: _round0(run_dir, s) for s in JUDGING}
    assert first["mt-bench-judgments"]["judging"] == {"judged": 4, "reused": 0}

    # A rerun re-judges nothing.
    _, states = run_recipe(capsys, RECIPE, *SETTINGS)
    assert all(states[s] == ["Cached"] for s in ("mt-bench-answers", *JUDGING))
    assert all(_round0(run_dir, s)["started_at"] == first[s]["started_at"] for s in JUDGING)

    # --from-stage re-judges without regenerating the answers.
    _, states = run_recipe(capsys, RECIPE, *SETTINGS, "--from-stage", "mt-bench-judgments")
    assert states["mt-bench-answers"] == ["Cached"] and states["mt-bench-judgments"] == ["Completed"]

    # Another judge (here: longer judgments) re-judges everything, and regenerates no answer.
    _, states = run_recipe(capsys, RECIPE, *SETTINGS, "eval.judge.max_new_tokens=7")
    assert states["mt-bench-answers"] == ["Cached"] and states["generate-answers"] == ["Cached", "Cached"]
    other = load_recipe(RECIPE, [*SETTINGS, "eval.judge.max_new_tokens=7"])
    other_dir = run_dir.parent / f"{other.name}-{config_hash(other)[:10]}"
    assert _round0(other_dir, "mt-bench-judgments")["judging"] == {"judged": 4, "reused": 0}
    assert _round0(other_dir, "pairwise-judgments")["judging"] == {"judged": 8, "reused": 0}


def test_unreachable_judge_is_one_line_naming_the_url(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    settings = [BENCHMARKS, f"eval.judge.base_url={url}", "eval.judge.served_model_name=judge", "suite.seed=22"]
    script = Path(sys.executable).with_name("alignflow")
    done = subprocess.run([str(script), "run", RECIPE, *settings], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in last and "after 3 tries" in last and "Traceback" not in done.stderr


def test_lm_eval_task_runs_every_round_and_logs_its_results(capsys):
    settings = ["eval.benchmarks=[{name: suite}, {name: lm_eval, tasks: [alignflow_suite], limit: 4, max_new_tokens: 8}]", "suite.seed=23"]
    recipe = load_recipe(RECIPE, settings)
    out, states = run_recipe(capsys, RECIPE, *settings)
    assert states["lm-eval"] == ["Completed"]
    client = MlflowClient(tracking.default_tracking_uri())
    parent = client.get_run(tracking.find_run(recipe.tracking.experiment, config_hash(recipe)))
    (child,) = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert 0 <= child.data.metrics["lm_eval/alignflow_suite/exact_match"] <= 1
    results = json.loads(Path(client.download_artifacts(child.info.run_id, "lm_eval/results.json")).read_text())
    assert "alignflow_suite" in results["results"] and results["config"]["limit"] == 4
    # The exported task holds the held-out items the suite stage scored.
    run_dir = Path(out.split("run folder:")[1].split()[0])
    exported = (run_dir / "round-0" / "lm-eval" / "suite-task" / "alignflow_suite.jsonl").read_text().splitlines()
    assert 0 < len(exported) <= recipe.suite.n_eval


def test_pairwise_against_a_model_judges_its_greedy_answers(capsys):
    # The baseline is the policy itself: identical outputs in both orders, so the position pulls cancel exactly.
    settings = [
        "eval.benchmarks=[{name: suite}, {name: pairwise, limit: 3, max_new_tokens: 6, baseline: {model: tiny-llama}}]",
        "eval.judge.model=tiny-llama", "suite.seed=24",  # seeds of their own: no other test shares these stages
    ]  # fmt: skip
    out, states = run_recipe(capsys, RECIPE, *settings)
    # The policy's answers and the baseline's are one stage output, built once.
    assert states["generate-answers"].count("Completed") + states["generate-answers"].count("Cached") == 3
    run_dir = Path(out.split("run folder:")[1].split()[0])
    ours = (run_dir / "round-0" / "generate-answers-pairwise").resolve()
    assert (run_dir / "round-0" / "generate-answers-pairwise-baseline").resolve() == ours
    metrics = json.loads((run_dir / "round-0" / "pairwise-judgments-pairwise" / "metrics.json").read_text())
    assert metrics["pairwise/win_rate"] == pytest.approx(0.5) and metrics["pairwise/judgments"] == 6


def test_a_trained_round_is_judged_against_round_0_and_its_change_has_an_interval(capsys):
    recipe_path = str(REPO / "configs" / "sft-tiny.yaml")
    settings = [
        "eval.benchmarks=[{name: suite}, {name: mt_bench, limit: 1, max_new_tokens: 4},"
        " {name: pairwise, limit: 3, max_new_tokens: 4, baseline: {model: round0}}]",
        "eval.judge.model=tiny-llama", "eval.judge.max_new_tokens=4", "train.lr=3e-3",
    ]  # fmt: skip
    out, _ = run_recipe(capsys, recipe_path, *settings)
    run_dir = Path(out.split("run folder:")[1].split()[0])
    assert not (run_dir / "round-0" / "pairwise-judgments-pairwise").exists()  # round 0 is its own baseline
    judged = run_dir / "round-1" / "pairwise-judgments-pairwise"
    table = json.loads((judged / "metrics.json").read_text())
    assert table["pairwise/judgments"] == 6 and 0 <= table["pairwise/win_rate"] <= 1
    recipe = load_recipe(recipe_path, settings)
    client = MlflowClient(tracking.default_tracking_uri())
    parent = client.get_run(tracking.find_run(recipe.tracking.experiment, config_hash(recipe)))
    history = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "mt_bench/delta")}
    low = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "mt_bench/delta_low")}
    assert list(history) == [1] and low[1] <= history[1]
    assert "mt_bench, round 1 against round 0:" in out and "pairwise win rate, round 1:" in out
