"""DPO's pairs: the reference answer (chosen) against the policy's lowest-scoring sample (rejected), or the
user's preference pairs as given.

Only for prompts where a sample fails its verifier: pairs exist only where
the policy was wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.data.prepare import read_rows
from pipeline_lib.suite.files import read_items
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, chat, write_rows


def dpo_pairs(items_dir: Path, scores_file: Path, folder: Path) -> dict[str, Any]:
    worst: dict[str, dict[str, Any]] = {}
    for row in pq.read_table(scores_file).to_pylist():
        if row["prompt_id"] not in worst or row["score"] < worst[row["prompt_id"]]["score"]:
            worst[row["prompt_id"]] = row
    pairs = []
    for item in read_items(items_dir):
        sample = worst.get(item.id)
        if sample is not None and sample["score"] < 1.0 and sample["response"] != item.reference:
            pairs.append({"prompt": chat(item.prompt), "chosen": item.reference, "rejected": sample["response"]})
    write_rows(pairs, folder / TRAIN_ROWS_FILE)
    return {"prompts": len(worst), "rows": len(pairs), "skipped_all_samples_passed": len(worst) - len(pairs)}


def preference_pairs(rows_file: Path, folder: Path) -> dict[str, Any]:
    """The user's ``data.preference`` pairs as they are: offline DPO."""
    rows = [{"prompt": r["messages"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in read_rows(rows_file)]
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows)}
