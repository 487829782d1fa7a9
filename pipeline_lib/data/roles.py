"""What each data role holds, and how one role's sources become one list of rows.

Every prepared row has ``id``, ``source``, ``source_row``, ``metadata`` and
``messages``, the conversation the model is asked to continue (it ends with a
user turn), except ``sft`` rows, whose ``messages`` is the whole conversation
to train on (it ends with the assistant's reply). On top of that:

``prompts``: ``prompt``, the last user turn; ``reference``, an answer when the
source has one ("" otherwise). ``preference``: ``prompt``, ``chosen`` and
``rejected``. ``revisions``: ``prompt``, ``original`` and ``revised``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.config import DataSource
from pipeline_lib.data.loaders import LoadResult, load_rows
from pipeline_lib.data.sources import open_source
from pipeline_lib.sampling.base import Message

Row = dict[str, Any]


@dataclass(frozen=True)
class Role:
    name: str
    used_for: str
    schemas: tuple[str, ...]  # the loader schemas a source of this role may have
    columns: tuple[str, ...]  # the role's own columns, after the common ones
    # The row's text pieces past its context: the replies a training sequence ends with.
    replies: Callable[[Row], list[str]]

    def context(self, row: Row) -> list[Message]:
        """What the model is asked: the conversation up to the turn it answers."""
        return row["messages"][:-1] if self.name == "sft" else row["messages"]

    def conversations(self, row: Row) -> list[list[Message]]:
        """The whole sequences a trainer sees: the context with each reply (none for a prompt)."""
        if self.name == "sft":
            return [row["messages"]]
        return [[*row["messages"], {"role": "assistant", "content": reply}] for reply in self.replies(row)]

    def reference(self, row: Row) -> str:
        """The answer a method may learn from or compare with ("" for a bare prompt)."""
        if self.name == "prompts":
            return row["reference"]
        if self.name == "sft":
            return row["messages"][-1]["content"]
        replies = self.replies(row)
        return replies[-1] if self.name == "revisions" else replies[0]

    def texts(self, row: Row) -> list[str]:
        """Every piece of text the row holds, in order: what dedupe and decontamination read."""
        return [message["content"] for message in row["messages"]] + self.replies(row)


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("prompts", "unannotated prompts to sample on", ("prompt",), ("prompt", "reference"), lambda row: []),
        Role("sft", "demonstrations to imitate", ("messages", "sft"), (), lambda row: []),
        Role("preference", "chosen/rejected pairs", ("preference",), ("prompt", "chosen", "rejected"),
             lambda row: [row["chosen"], row["rejected"]]),
        Role("revisions", "(original, revised) reply pairs", ("revision",), ("prompt", "original", "revised"),
             lambda row: [row["original"], row["revised"]]),
    )
}  # fmt: skip


@dataclass
class SourceRows:
    """One source's rows in the role's shape, and its loader's tally."""

    key: str  # where the recipe names it: data.<role>[i]
    source: DataSource
    loaded: LoadResult
    rows: list[Row]


def load_role(role: str, sources: list[DataSource]) -> Iterator[SourceRows]:
    """Each source of ``role`` loaded, validated and put in the role's shape; ids made unique across sources."""
    spec = ROLES[role]
    for index, source in enumerate(sources):
        key = f"data.{role}[{index}]" if len(sources) > 1 else f"data.{role}"
        schema = _schema(spec, source)
        try:
            loaded = load_rows(
                source.source, schema, source.columns, source.split, source.limit, source.format, source.name, source.revision
            )
        except UserError as error:
            raise UserError(f"{key}: {error}{_hint(spec, schema)}") from None
        rows = [_shaped(spec, schema, row, index if len(sources) > 1 else None) for row in loaded.rows]
        yield SourceRows(key, source, loaded, rows)


def _schema(role: Role, source: DataSource) -> str:
    """The loader schema of one source: for ``sft``, prompt/response pairs or whole conversations."""
    if len(role.schemas) == 1:
        return role.schemas[0]
    mapped = set(source.columns)
    if mapped & {"prompt", "response"}:
        return "sft"
    if "messages" in mapped or source.format == "hh-rlhf":
        return "messages"
    first = next(open_source(source.source, source.split, source.name, source.revision))
    return "sft" if "response" in first.table.column_names else "messages"


def _hint(role: Role, schema: str) -> str:
    if role.name != "sft":
        return ""
    return "; an sft source holds prompt/response columns or a messages column of whole conversations"


def _shaped(role: Role, schema: str, row: Mapping[str, Any], source_index: int | None) -> Row:
    shaped = {name: row[name] for name in ("id", "source", "source_row", "metadata")}
    if source_index is not None:
        # Two files may both number their rows from 1.
        shaped["id"] = f"{source_index}:{row['id']}"
    if schema == "sft":
        shaped["messages"] = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
    else:
        shaped["messages"] = row["messages"]
    for name in role.columns:
        shaped[name] = _first_reference(row) if name == "reference" else row[name]
    return shaped


def _first_reference(row: Mapping[str, Any]) -> str:
    return row["reference"][0] if row.get("reference") else ""
