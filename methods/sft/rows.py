"""SFT's (and IFT's) training rows: the suite's reference answers, or the user's ``data.sft`` conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline_lib.data.items import read_prompt_items
from pipeline_lib.data.prepare import read_rows
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, chat, write_rows


def sft_rows(items_dir: Path, folder: Path) -> dict[str, Any]:
    rows = [{"prompt": chat(item.prompt), "completion": item.reference} for item in read_prompt_items(items_dir)]
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows)}


def conversation_rows(rows_file: Path, folder: Path) -> dict[str, Any]:
    """Whole conversations (``messages``): the trainer puts loss on every assistant turn."""
    rows = [{"messages": row["messages"]} for row in read_rows(rows_file)]
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows), "multi_turn": sum(len(row["messages"]) > 2 for row in rows)}
