"""Round-against-round-0 differences: paired by prompt, with a bootstrap interval, in the table and leaderboard."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from methods.compare.leaderboard import leaderboard_markdown
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.reporting import metrics as m
from pipeline_lib.suite.config import IntervalConfig
from pipeline_lib.suite.intervals import describe_delta, interval_metrics, prompt_scores, score_interval
from pipeline_lib.suite.scoring import SCORES_FILE

REPO = Path(__file__).resolve().parents[1]


def _scores(folder: Path, rows: list[tuple[str, float]]) -> Path:
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist([{"prompt_id": p, "score": s, "family": "f"} for p, s in rows])
    pq.write_table(table, folder / SCORES_FILE)
    return folder


def test_prompts_are_paired_by_id_and_averaged_over_their_samples(tmp_path):
    start = _scores(tmp_path / "a", [("p1", 0.0), ("p2", 1.0), ("p3", 0.5)])
    later = _scores(tmp_path / "b", [("p3", 1.0), ("p1", 1.0), ("p1", 0.0), ("p9", 1.0)])  # p9: not in round 0
    assert prompt_scores(later) == {"p3": 1.0, "p1": 0.5, "p9": 1.0}
    interval = score_interval(later, start, None, seed=0)
    # p1: 0.5 - 0, p3: 1 - 0.5; p2 has no pair in the later round and p9 none in round 0.
    assert interval.n == 2 and interval.difference == pytest.approx(0.5)
    assert interval.resamples == 10_000 and interval.confidence == 0.95


@pytest.mark.parametrize("gain, within", [(1.0, False), (0.0, True)])
def test_the_interval_says_whether_a_change_is_noise(tmp_path, gain, within):
    rows = [(f"p{i}", float(i % 2)) for i in range(40)]
    start = _scores(tmp_path / "a", rows)
    # Every prompt gains `gain` (capped at 1), or the passes and failures swap places: the same mean.
    later = _scores(tmp_path / "b", [(p, min(1.0, s + gain)) if gain else (p, 1.0 - s) for p, s in rows])
    interval = score_interval(later, start, IntervalConfig(resamples=500, confidence=0.9), seed=3)
    assert interval.resamples == 500 and interval.confidence == 0.9
    metrics = interval_metrics(interval)
    assert metrics[m.EVAL_SCORE_DELTA_LOW] <= metrics[m.EVAL_SCORE_DELTA] <= metrics[m.EVAL_SCORE_DELTA_HIGH]
    assert describe_delta(metrics).endswith("within noise") is within
    assert score_interval(later, start, IntervalConfig(resamples=500, confidence=0.9), seed=3) == interval  # seeded


def test_the_leaderboard_shows_each_methods_interval_against_the_start():
    start = {m.EVAL_SCORE: 0.3, m.EVAL_PASS_RATE: 0.2, m.EVAL_LENGTH: 30.0}
    row = {"method": "seft", "score": 0.32, "pass_rate": 0.21, "length": 31.0, "wall_s": 60, "train_tokens": 900,
           "score_delta": 0.02, "score_delta_low": -0.01, "score_delta_high": 0.05}  # fmt: skip
    table = leaderboard_markdown([row, {**row, "method": "sft", "score_delta": None}], start).splitlines()
    assert "against start (95 % CI)" in table[0]
    assert "| seft | 0.320 | +0.020 [-0.010, +0.050] within noise |" in table[3]
    assert "| sft | 0.320 | – |" in table[4]


def test_interval_settings_enter_the_config_hash_only_when_set():
    recipe = str(REPO / "configs" / "sft-tiny.yaml")
    plain = config_hash(load_recipe(recipe))
    assert config_hash(load_recipe(recipe, ["eval.intervals=null"])) == plain
    assert config_hash(load_recipe(recipe, ["eval.intervals.resamples=2000"])) != plain
