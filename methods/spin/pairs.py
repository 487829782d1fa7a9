"""SPIN's pairs: the real answer (the reference, chosen) against the policy's own sample (generated, rejected).

Iteration t trains on its new pairs plus iteration t−1's, which it finds in
the previous iteration's ``PAIRS_FILE``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.data.items import read_prompt_items
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, first_samples, write_rows

PAIRS_FILE = "pairs.parquet"  # this iteration's new pairs, which the next iteration trains on again


def spin_pairs(items_dir: Path, samples_file: Path, previous_pairs: Path | None, seed: int, folder: Path) -> dict[str, Any]:
    samples = first_samples(samples_file)
    pairs = [
        {"prompt": item.messages, "chosen": item.reference, "rejected": samples[item.id], "prompt_id": item.id}
        for item in read_prompt_items(items_dir)
        if item.id in samples
    ]
    identical = sum(pair["chosen"] == pair["rejected"] for pair in pairs)
    write_rows(pairs, folder / PAIRS_FILE)
    earlier = pq.read_table(previous_pairs).to_pylist() if previous_pairs else []
    train = pairs + earlier
    random.Random(seed).shuffle(train)
    write_rows(train, folder / TRAIN_ROWS_FILE)
    # A sample equal to the real answer gives u = 0 for every θ: a constant loss with no gradient.
    return {"new_pairs": len(pairs), "previous_pairs": len(earlier), "rows": len(train), "identical_pairs": identical}
