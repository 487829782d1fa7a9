"""SFT's (and IFT's) training rows: the suite's reference answers, the "real" SFT data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline_lib.suite.files import read_items
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, chat, write_rows


def sft_rows(items_dir: Path, folder: Path) -> dict[str, Any]:
    rows = [{"prompt": chat(item.prompt), "completion": item.reference} for item in read_items(items_dir)]
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows)}
