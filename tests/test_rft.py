"""RFT: which scored samples become training rows, and the method end to end on the tiny model."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from methods.recipe import load_recipe
from methods.rft.rows import EMPTY_RESPONSE, rft_rows
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.reporting.metrics import EVAL_SCORE, RFT_KEPT, RFT_PROMPTS_COVERED
from pipeline_lib.store import read_manifest
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import read_items, write_suite_split
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.stage import DECLARED

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "rft-tiny.yaml")


def _items(tmp_path: Path) -> tuple[Path, list]:
    folder = tmp_path / "items"
    folder.mkdir()
    write_suite_split(SuiteConfig(n_train=3, difficulty=[1]), "train", folder)
    return folder, read_items(folder)


def _scores(tmp_path: Path, rows: list[tuple[str, int, str, float]]) -> Path:
    """Scored samples as (prompt id, sample index, response, score)."""
    path = tmp_path / "scores.parquet"
    keys = ("prompt_id", "sample_index", "response", "score")
    pq.write_table(pa.Table.from_pylist([dict(zip(keys, row)) for row in rows]), path)
    return path


def _select(items: Path, rows: list, min_score: float = 1.0, max_per_prompt: int | None = 1) -> tuple[dict, list]:
    """Run the selection on ``rows``; return its report and the kept (prompt, completion) pairs."""
    out = items.parent / f"out-{min_score}-{max_per_prompt}"
    out.mkdir()
    report = rft_rows(items, _scores(items.parent, rows), min_score, max_per_prompt, out)
    kept = [(row["prompt"][0]["content"], row["completion"]) for row in pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()]
    return report, kept


def test_rows_keep_passing_samples_best_first_up_to_the_cap(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    a, b, c = items
    scored = [
        (b.id, 0, "b0", 1.0),
        (a.id, 2, "a2", 1.0),
        (a.id, 0, "a0", 0.5),
        (a.id, 1, "a1", 1.0),
        (c.id, 0, "c0", 0.0),
    ]
    report, kept = _select(folder, scored)
    # Prompts in the items' order; among equals, the lowest sample index.
    assert kept == [(a.prompt, "a1"), (b.prompt, "b0")]
    assert report == {
        "prompts": 3, "samples": 5, "best_score": 1.0, "passed": 3, "rows": 2, "prompts_covered": 2,
        "skipped_duplicate": 0, "skipped_over_cap": 1,
    }  # fmt: skip

    report, kept = _select(folder, scored, min_score=0.5, max_per_prompt=None)
    assert kept == [(a.prompt, "a1"), (a.prompt, "a2"), (a.prompt, "a0"), (b.prompt, "b0")]
    assert (report["passed"], report["rows"], report["skipped_over_cap"]) == (4, 4, 0)

    report, kept = _select(folder, scored, min_score=0.0, max_per_prompt=2)
    assert kept == [(a.prompt, "a1"), (a.prompt, "a2"), (b.prompt, "b0"), (c.prompt, "c0")]
    assert (report["prompts_covered"], report["skipped_over_cap"]) == (3, 1)


def test_rows_keep_distinct_texts_and_count_unusable_samples(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    a, b, _ = items
    scored = [
        (a.id, 0, "same", 1.0),
        (a.id, 1, " same\n", 1.0),  # the same answer, whitespace aside
        (a.id, 2, "other", 1.0),
        (b.id, 0, "  ", 1.0),
        (b.id, 1, "", 0.0),  # fails anyway: not counted as unusable
        ("not-an-item", 0, "x", 1.0),
    ]
    report, kept = _select(folder, scored, max_per_prompt=None)
    assert kept == [(a.prompt, "same"), (a.prompt, "other")]
    assert (report["rows"], report["prompts_covered"], report["skipped_duplicate"]) == (2, 1, 1)
    assert report["skipped_rows"] == {EMPTY_RESPONSE: 1, "prompt not among the training items": 1}


def test_rows_without_a_passing_sample_are_empty(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    report, kept = _select(folder, [(items[0].id, 0, "wrong", 0.25)])
    assert kept == [] and (report["rows"], report["best_score"], report["prompts_covered"]) == (0, 0.25, 0)
    assert "skipped_rows" not in report


@pytest.mark.integration
def test_rft_trains_on_the_samples_that_pass_and_a_rerun_reuses_every_stage(capsys, alignflow_home):
    recipe = load_recipe(RECIPE)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"
    out, states = run_recipe(capsys, RECIPE)
    assert states["train-policy"] == ["Completed"] and states["sample-policy"] == ["Completed"]

    rows_dir = run_dir / "round-1" / "build-training-rows"
    kept = read_manifest(rows_dir)
    rows = pq.read_table(rows_dir / TRAIN_ROWS_FILE).to_pylist()
    assert kept["rows"] == len(rows) > 0 and 0 < kept["prompts_covered"] <= kept["prompts"]
    scores = pq.read_table(run_dir / "round-1" / "score-samples" / "scores.parquet").to_pylist()
    passing = {(s["prompt"], s["response"]) for s in scores if s["score"] >= recipe.rft.min_score}
    assert {(r["prompt"][0]["content"], r["completion"]) for r in rows} <= passing
    per_prompt = [sum(r["prompt"] == row["prompt"] for r in rows) for row in rows]
    assert max(per_prompt) <= recipe.rft.max_per_prompt
    assert read_manifest(run_dir / "round-1" / "train-policy")["train"]["objective"] == "sft"

    client = MlflowClient(tracking.default_tracking_uri())
    parent_id = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    assert [m.step for m in client.get_metric_history(parent_id, EVAL_SCORE)] == [0, 1]
    assert [(m.step, m.value) for m in client.get_metric_history(parent_id, RFT_KEPT)] == [(1, len(rows))]
    covered = client.get_metric_history(parent_id, RFT_PROMPTS_COVERED)
    assert [(m.step, m.value) for m in covered] == [(1, kept["prompts_covered"])]
    assert [line.split()[0] for line in out[out.index("round") :].splitlines()[1:3]] == ["0", "1"]

    _, states = run_recipe(capsys, RECIPE)
    stages = {name: runs for name, runs in states.items() if name in DECLARED}
    assert set(stages) >= {"prepare-suite", "sample-policy", "score-samples", "build-training-rows", "train-policy"}
    assert {state for runs in stages.values() for state in runs} == {"Cached"}


@pytest.mark.integration
def test_rft_without_a_passing_sample_stops_before_training(capsys, alignflow_home):
    from flows.cli import main

    assert main(["run", RECIPE, "rft.min_score=1.0", "sampler.n=1"]) == 2
    err = capsys.readouterr().err
    assert "rft kept no sample" in err and "sampler.n 1" in err and "rft.min_score" in err
