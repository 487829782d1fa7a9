"""A split of the suite on disk: its items as one Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.suite.generate import generate_suite
from pipeline_lib.suite.item import SuiteItem

if TYPE_CHECKING:
    from pipeline_lib.suite.config import SuiteConfig

from pipeline_lib.data.items import ITEMS_FILE  # the file every generation stage reads prompts from


def write_suite_split(
    config: SuiteConfig, split: str, folder: Path, start: int = 0, stop: int | None = None
) -> dict[str, Any]:
    """Generate one split of the suite (or its items ``start:stop``) into ``folder/items.parquet``."""
    n = config.n_eval if split == "eval" else config.n_train
    items = generate_suite(split, n, seed=config.seed, families=config.families, difficulty=config.difficulty)
    items = items[start:stop]
    pq.write_table(pa.Table.from_pylist([item.to_row() for item in items]), folder / ITEMS_FILE)
    return {"rows": len(items), "split": split}


def read_items(folder: Path) -> list[SuiteItem]:
    return [SuiteItem.from_row(row) for row in pq.read_table(Path(folder) / ITEMS_FILE).to_pylist()]
