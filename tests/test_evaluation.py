"""Held-out scoring from stored items and samples, without a model."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_lib.reporting.tables import family_table
from pipeline_lib.sampling import SAMPLES_SCHEMA
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import read_items, write_suite_split
from pipeline_lib.suite.scoring import flat_metrics, read_metrics, score_samples


def _samples(tmp_path, items, texts):
    path = tmp_path / "samples.parquet"
    table = pa.Table.from_pydict(
        {
            "prompt_id": [item.id for item in items],
            "sample_index": [0] * len(items),
            "text": texts,
            "prompt_tokens": [10] * len(items),
            "completion_tokens": [4] * len(items),
            "finish_reason": ["stop"] * len(items),
        },
        schema=SAMPLES_SCHEMA,
    )
    pq.write_table(table, path)
    return path


@pytest.fixture()
def items_dir(tmp_path):
    folder = tmp_path / "items"
    folder.mkdir()
    info = write_suite_split(SuiteConfig(n_eval=14, difficulty=[1]), "eval", folder)
    assert info == {"rows": 14, "split": "eval"}
    return folder


def test_reference_answers_score_one_everywhere(tmp_path, items_dir):
    items = read_items(items_dir)
    out = tmp_path / "scores"
    out.mkdir()
    result = score_samples(items_dir, _samples(tmp_path, items, [i.reference for i in items]), out)
    assert result == {"rows": 14, "score": 1.0, "pass_rate": 1.0}
    metrics = read_metrics(out)
    assert metrics["length"] == 4.0 and set(metrics["families"]) == {i.family for i in items}
    flat = flat_metrics(metrics)
    assert flat["eval/score"] == 1.0 and flat["eval/pass_rate/format"] == 1.0
    assert "overall" in family_table(metrics)


def test_empty_answers_score_zero_and_rows_keep_reasons(tmp_path, items_dir):
    items = read_items(items_dir)
    out = tmp_path / "scores"
    out.mkdir()
    result = score_samples(items_dir, _samples(tmp_path, items, [""] * len(items)), out)
    assert result["score"] == 0.0 and result["pass_rate"] == 0.0
    rows = pq.read_table(out / "scores.parquet").to_pylist()
    assert all(row["reasons"] == "empty response" and not row["passed"] for row in rows)
