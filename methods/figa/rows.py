"""FIGA's training rows: each prompt's policy sample (original) against a revision of it (revised).

The revision is the SEFT reviser's minor or major revision of the sample, or
else the suite's reference answer (``figa.revised_from``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.data.items import read_prompt_items
from pipeline_lib.data.prepare import read_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, first_samples, write_rows


def figa_rows(items_dir: Path, samples_file: Path, revisions_file: Path | None, folder: Path) -> dict[str, Any]:
    """Original = the policy's first sample; revised = its revision (minor/major) or else the reference."""
    items = {item.id: item for item in read_prompt_items(items_dir)}
    if revisions_file is None:
        candidates: Iterable[tuple[str, str, str]] = (
            (pid, text, items[pid].reference) for pid, text in first_samples(samples_file).items()
        )
    else:
        candidates = (
            (r["prompt_id"], r["response"], r["enhanced"])
            for r in pq.read_table(revisions_file).to_pylist()
            if r["sample_index"] == 0 and r["decision"] in ("minor", "major") and r["enhanced"] is not None
        )
    rows, unchanged = [], 0
    for prompt_id, original, revised in candidates:
        if revised == original:
            unchanged += 1  # no edit: nothing to learn from the pair
            continue
        rows.append({"prompt": items[prompt_id].messages, "original": original, "revised": revised})
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    source = "reference" if revisions_file is None else "reviser"
    return {"rows": len(rows), "skipped_unchanged": unchanged, "revised_from": source}


def revision_rows(rows_file: Path, folder: Path) -> dict[str, Any]:
    """The user's ``data.revisions`` pairs as they are."""
    rows = [{"prompt": r["messages"], "original": r["original"], "revised": r["revised"]} for r in read_rows(rows_file)]
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows), "revised_from": "data"}
