"""Writes that leave a file either absent or complete, never half-written."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden, unique name beside ``path``: renaming it onto ``path`` is atomic (same folder)."""
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_parquet(table: Any, path: Path) -> None:
    """Write a pyarrow table so that ``path`` is either absent or complete."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
