"""DPO's pairs: the reference answer (chosen) against the policy's lowest-scoring sample (rejected).

Only for prompts where a sample fails its verifier: pairs exist only where
the policy was wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

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
