"""What every method's training rows share: the file ``train_model`` reads, the chat prompt, the writer.

Each method builds its rows in its own folder (``methods/<name>/rows.py``)
and writes them with ``write_rows`` to ``TRAIN_ROWS_FILE``, the file the
training stage reads for the method's objective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRAIN_ROWS_FILE = "train.parquet"


def chat(prompt: str) -> list[dict[str, str]]:
    """A prompt as the one-turn chat the trainers apply the model's template to."""
    return [{"role": "user", "content": prompt}]


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def first_samples(samples_file: Path) -> dict[str, str]:
    """Each prompt's first sample (index 0): the one a method pairs when it samples once per prompt."""
    return {s["prompt_id"]: s["text"] for s in pq.read_table(samples_file).to_pylist() if s["sample_index"] == 0}
