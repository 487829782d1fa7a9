"""SFT, IFT, DPO, SPIN, FIGA and compare-methods end to end on the tiny model: real Prefect, real MLflow."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from flows.cli import main
from methods.recipe import load_recipe
from methods.spin.pairs import PAIRS_FILE
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.reporting.metrics import EVAL_SCORE, TRAIN_LOSS
from pipeline_lib.store import read_manifest
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.stage import DECLARED

REPO = Path(__file__).resolve().parents[1]


def _recipe(method: str) -> str:
    return str(REPO / "configs" / f"{method}-tiny.yaml")


def _run_dir(home: Path, recipe_path: str) -> tuple:
    recipe = load_recipe(recipe_path)
    return recipe, home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"


@pytest.mark.integration
@pytest.mark.parametrize("method", ["sft", "ift", "dpo", "figa"])
def test_one_round_methods_train_with_their_objective_and_log_rounds(method, capsys, alignflow_home):
    recipe, run_dir = _run_dir(alignflow_home, _recipe(method))
    out, states = run_recipe(capsys, _recipe(method))

    # IFT trains on the very rows SFT does: whichever runs second reuses them.
    assert states["train-policy"] == ["Completed"] and len(states["build-training-rows"]) == 1
    policy = read_manifest(run_dir / "round-1" / "train-policy")
    assert policy["train"]["objective"] == method and policy["train"]["steps"] >= 1
    rows = read_manifest(run_dir / "round-1" / "build-training-rows")
    train_rows = pq.read_table(run_dir / "round-1" / "build-training-rows" / TRAIN_ROWS_FILE).to_pylist()
    assert rows["rows"] == len(train_rows) > 0
    fields = {"sft": "completion", "ift": "completion", "dpo": "rejected", "figa": "original"}[method]
    assert fields in train_rows[0]
    if method == "dpo":
        # Pairs only where a sample failed its verifier; the chosen side is the reference answer.
        scores = pq.read_table(run_dir / "round-1" / "score-samples" / "scores.parquet").to_pylist()
        failing = {row["prompt"] for row in scores if row["score"] < 1}
        assert {row["prompt"][0]["content"] for row in train_rows} <= failing
    if method == "figa":
        assert rows["revised_from"] == "reference" and all(r["original"] != r["revised"] for r in train_rows)

    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(parent_id, EVAL_SCORE)] == [0, 1]
    assert [m.step for m in client.get_metric_history(parent_id, TRAIN_LOSS)] == [1]
    # Round 1 against round 0 on the same prompts, with its interval, in MLflow and on the console.
    assert [m.step for m in client.get_metric_history(parent_id, "eval/score_delta_low")] == [1]
    assert "score, round 1 against round 0: " in out
    if method == "dpo":  # the objective's own logs reach MLflow
        assert {"train/rewards/accuracies", "train/rewards/margins"} <= set(client.get_run(parent_id).data.metrics)
    assert [line.split()[0] for line in out[out.index("round") :].splitlines()[1:3]] == ["0", "1"]


@pytest.mark.integration
def test_spin_iterations_train_on_new_and_previous_pairs_against_the_last_iterate(capsys, alignflow_home):
    recipe, run_dir = _run_dir(alignflow_home, _recipe("spin"))
    _, states = run_recipe(capsys, _recipe("spin"))
    assert states["train-policy"] == ["Completed"] * 2 and len(states["sample-policy"]) == 2

    prompts = recipe.suite.n_train
    first, second = (read_manifest(run_dir / f"round-{k}" / "build-training-rows") for k in (1, 2))
    assert (first["new_pairs"], first["previous_pairs"], first["rows"]) == (prompts, 0, prompts)
    assert (second["new_pairs"], second["previous_pairs"], second["rows"]) == (prompts, prompts, 2 * prompts)
    rows_2 = pq.read_table(run_dir / "round-2" / "build-training-rows" / TRAIN_ROWS_FILE).to_pylist()
    pairs_1 = pq.read_table(run_dir / "round-1" / "build-training-rows" / PAIRS_FILE).to_pylist()
    samples_2 = pq.read_table(run_dir / "round-2" / "sample-policy" / "samples.parquet").column("text").to_pylist()
    rejected = [row["rejected"] for row in rows_2]
    assert sorted(rejected) == sorted([p["rejected"] for p in pairs_1] + samples_2)
    assert read_manifest(run_dir / "round-2" / "train-policy")["train"]["objective"] == "spin"

    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    assert [m.step for m in client.get_metric_history(parent_id, EVAL_SCORE)] == [0, 1, 2]


@pytest.mark.integration
def test_a_rerun_reuses_every_stage(capsys, alignflow_home):
    # A policy of its own: the one-round test above must find sft-tiny's training not yet done, in any order.
    settings = ("train.lr=2e-3",)
    run_recipe(capsys, _recipe("sft"), *settings)
    _, states = run_recipe(capsys, _recipe("sft"), *settings)
    stages = {name: runs for name, runs in states.items() if name in DECLARED}
    assert set(stages) >= {"prepare-suite", "generate-answers", "score", "build-training-rows", "train-policy"}
    assert {state for runs in stages.values() for state in runs} == {"Cached"}


def test_method_recipes_reject_other_objectives_and_sections(capsys):
    assert main(["check", _recipe("sft"), "train.objective=dpo"]) == 2
    assert "method 'sft' trains with objective 'sft'" in capsys.readouterr().err
    assert main(["check", _recipe("dpo"), "spin.iterations=3"]) == 2
    assert "section 'spin' is only used by method 'spin'" in capsys.readouterr().err
    assert main(["compare-methods", _recipe("sft")]) == 2
    assert "this command runs 'compare' recipes" in capsys.readouterr().err


@pytest.mark.integration
# Beside the other compare-tiny test, whose contestants and reviser it shares; not on the seft-tiny
# worker, the suite's critical path.
@pytest.mark.xdist_group("compare-tiny")
def test_compare_methods_logs_one_leaderboard(capsys, alignflow_home):
    recipe_path = str(REPO / "configs" / "compare-tiny.yaml")
    recipe, run_dir = _run_dir(alignflow_home, recipe_path)
    assert main(["compare-methods", recipe_path]) == 0
    out = capsys.readouterr().out

    labels = [variant.label for variant in recipe.compare.methods]
    assert labels == ["sft", "spin", "seft-ondare"]
    table = (run_dir / "leaderboard.md").read_text().splitlines()
    assert table[0].startswith("| method | held-out score | against start (95 % CI)") and table[0] in out
    assert sorted(line.split("|")[1].strip() for line in table[3:]) == sorted(labels)
    scores = [float(line.split("|")[2]) for line in table[3:]]
    assert scores == sorted(scores, reverse=True), "best first"

    # Same start, same prompts, same budget per training round.
    budget = recipe.compare.token_budget
    prompt_sets = set()
    for label in labels:
        variant = load_recipe(run_dir / label / "config.yaml")
        assert variant.model.ref == recipe.model.ref and variant.train.max_tokens is not None
        rounds = {"seft": variant.seft.rounds if variant.seft else 1, "spin": 2}.get(variant.method, 1)
        assert variant.train.max_tokens == budget // rounds
        where = "round-1/prepare-suite-pool" if variant.method == "seft" else "shared/prepare-suite-train"
        items = run_dir / label / where / "items.parquet"
        prompt_sets.add(tuple(pq.read_table(items).column("id").to_pylist()))
        policy = read_manifest(run_dir / label / "round-1" / "train-policy")["train"]
        # The budget sets the epochs: trained tokens land within one batch of it.
        assert policy["trained_tokens"] >= 0.5 * variant.train.max_tokens
    assert len(prompt_sets) == 1
    ondare = read_manifest(run_dir / "seft-ondare" / "round-1" / "train-policy")["train"]
    assert ondare["optimizer"] == "ondare" and ondare["optimizer_step_ms"] > 0
    sft_model = load_recipe(run_dir / "seft-ondare" / "config.yaml").train.merging.sft_model
    assert Path(sft_model) == (run_dir / "sft" / "round-1" / "train-policy").resolve()

    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    parent = client.get_run(parent_id)
    assert {f"leaderboard/{label}/score" for label in labels} <= set(parent.data.metrics)
    assert {"leaderboard.json", "leaderboard.md"} <= {a.path for a in client.list_artifacts(parent_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(run.info.run_name for run in children) == sorted(labels)
    sft_run = next(run for run in children if run.info.run_name == "sft")
    rounds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{sft_run.info.run_id}'")
    assert sorted(run.info.run_name for run in rounds) == ["round-0", "round-1"]

    # Every contestant's trained rounds are LoggedModels naming its own method, and its final model is
    # registered under the comparison's name and its label.
    models = client.search_logged_models([parent.info.experiment_id], f"tags.`alignflow.pipeline_run_id` = '{parent_id}'")
    assert {(model.name.rsplit("-round-", 1)[0], model.params["method"]) for model in models} == {
        ("compare-tiny-sft", "sft"), ("compare-tiny-spin", "spin"), ("compare-tiny-seft-ondare", "seft")
    }
    for label in labels:
        final = max((run_dir / label).glob("round-*/train-policy"))
        name, version = out.split(f"registered:  {label} as models:/")[1].split()[0].split("/")
        registered = client.get_model_version(name, version)
        assert name == f"compare-tiny-{label}" and registered.tags["alignflow.stage_key"] == read_manifest(final)["key"]
