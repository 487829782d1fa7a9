"""Prompts to sample, as every generation stage reads them: the suite's items or a prepared data role's.

Both are an ``items.parquet`` with ``id``, ``prompt`` and ``reference``; a
prepared role's also has ``messages``, the conversation to continue. The
suite's have ``family`` and a verifier ``spec`` besides, which only scoring
reads (``suite.files.read_items``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.base import Message

ITEMS_FILE = "items.parquet"


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: str  # the user turn to answer
    messages: list[Message]  # that turn in its conversation: just it, for a single-turn prompt
    reference: str  # an answer to learn from or compare with; "" when there is none
    family: str = ""  # the suite's task family; "" for the user's data

    @property
    def dialogue(self) -> str | list[Message]:
        """The prompt as the reviser and the trainers take it: a string, or the conversation when it has earlier turns."""
        return self.messages if len(self.messages) > 1 else self.prompt


def read_prompt_items(folder: str | Path) -> list[PromptItem]:
    table = pq.read_table(Path(folder) / ITEMS_FILE)
    columns = set(table.column_names)
    return [
        PromptItem(
            id=str(row["id"]),
            prompt=row["prompt"],
            messages=row["messages"] if "messages" in columns else [{"role": "user", "content": row["prompt"]}],
            reference=row.get("reference") or "",
            family=row.get("family") or "",
        )
        for row in table.to_pylist()
    ]


def has_verifier(folder: str | Path) -> bool:
    """Whether the items are the suite's, which a verifier can score."""
    return "spec" in pq.read_schema(Path(folder) / ITEMS_FILE).names


def take_items(folder: Path, start: int, stop: int, out: Path) -> dict[str, int]:
    """Items ``start:stop`` of ``folder`` into ``out``; fewer is an error naming the numbers."""
    table = pq.read_table(Path(folder) / ITEMS_FILE)
    if stop > table.num_rows:
        raise UserError(f"{table.num_rows} prepared prompts cannot give prompts {start} to {stop}; give more prompts or ask for fewer")
    pq.write_table(table.slice(start, stop - start), out / ITEMS_FILE)
    return {"rows": stop - start, "start": start}
