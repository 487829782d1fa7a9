"""Training rows of SFT, SPIN, DPO and FIGA from suite items, samples, scores and revisions."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from methods.dpo.pairs import dpo_pairs
from methods.figa.rows import figa_rows
from methods.sft.rows import sft_rows
from methods.spin.pairs import PAIRS_FILE, spin_pairs
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import read_items, write_suite_split
from pipeline_lib.training.rows import TRAIN_ROWS_FILE


def _items(tmp_path: Path) -> list:
    folder = tmp_path / "items"
    folder.mkdir()
    write_suite_split(SuiteConfig(n_train=4, difficulty=[1]), "train", folder)
    return folder, read_items(folder)


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _sample(prompt_id: str, index: int, text: str) -> dict:
    return {"prompt_id": prompt_id, "sample_index": index, "text": text}


def test_figa_rows_take_minor_and_major_revisions_of_first_samples(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    a, b, c, d = (item.id for item in items)
    revisions = _write(tmp_path / "rev" / "revisions.parquet", [
        {"prompt_id": a, "sample_index": 0, "response": "x", "decision": "minor", "enhanced": "x!"},
        {"prompt_id": b, "sample_index": 0, "response": "y", "decision": "none", "enhanced": "y"},
        {"prompt_id": c, "sample_index": 0, "response": "z", "decision": "major", "enhanced": "z"},  # no edit
        {"prompt_id": d, "sample_index": 1, "response": "w", "decision": "major", "enhanced": "v"},  # not the first sample
    ])  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    report = figa_rows(folder, tmp_path / "unused.parquet", revisions, out)
    rows = pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()
    assert report == {"rows": 1, "skipped_unchanged": 1, "revised_from": "reviser"}
    assert rows == [{"prompt": [{"role": "user", "content": items[0].prompt}], "original": "x", "revised": "x!"}]


def test_figa_rows_from_reference_and_dpo_pairs_from_failing_samples(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    samples = _write(tmp_path / "s" / "samples.parquet", [_sample(item.id, 0, f"answer {i}") for i, item in enumerate(items)])
    out = tmp_path / "figa"
    out.mkdir()
    figa_rows(folder, samples, None, out)
    rows = pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()
    assert [(r["original"], r["revised"]) for r in rows] == [(f"answer {i}", item.reference) for i, item in enumerate(items)]

    scores = _write(tmp_path / "sc" / "scores.parquet", [
        {"prompt_id": items[0].id, "response": "bad", "score": 0.0},
        {"prompt_id": items[0].id, "response": "half", "score": 0.5},
        {"prompt_id": items[1].id, "response": items[1].reference, "score": 1.0},
    ])  # fmt: skip
    out = tmp_path / "dpo"
    out.mkdir()
    report = dpo_pairs(folder, scores, out)
    pairs = pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()
    assert report == {"prompts": 2, "rows": 1, "skipped_all_samples_passed": 1}
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (items[0].reference, "bad")


def test_sft_rows_and_spin_pairs_train_on_new_and_previous_pairs(tmp_path: Path) -> None:
    folder, items = _items(tmp_path)
    out = tmp_path / "sft"
    out.mkdir()
    assert sft_rows(folder, out) == {"rows": len(items)}
    rows = pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()
    assert rows[0] == {"prompt": [{"role": "user", "content": items[0].prompt}], "completion": items[0].reference}

    samples = [_sample(item.id, 0, f"answer {i}") for i, item in enumerate(items)] + [_sample(items[0].id, 1, "second")]
    samples_file = _write(tmp_path / "s" / "samples.parquet", samples)
    first, second = tmp_path / "spin-1", tmp_path / "spin-2"
    first.mkdir()
    second.mkdir()
    report = spin_pairs(folder, samples_file, None, 0, first)
    assert report == {"new_pairs": 4, "previous_pairs": 0, "rows": 4, "identical_pairs": 0}
    report = spin_pairs(folder, samples_file, first / PAIRS_FILE, 0, second)
    assert (report["new_pairs"], report["previous_pairs"], report["rows"]) == (4, 4, 8)
    rejected = [row["rejected"] for row in pq.read_table(second / TRAIN_ROWS_FILE).to_pylist()]
    assert sorted(rejected) == sorted([f"answer {i}" for i in range(4)] * 2), "first samples only, both iterations"
