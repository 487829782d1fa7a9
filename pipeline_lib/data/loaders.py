"""Load any supported source into validated, normalised rows of one schema.

Every row is checked; a row that cannot be normalised is skipped and counted by
reason (never dropped silently), and a source with no usable row at all is a
``UserError``. See ``schemas`` for the row layouts and ``formats`` for the
known dataset layouts.
"""

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets

from pipeline_lib.core.errors import UserError
from pipeline_lib.data import checks
from pipeline_lib.data import columns as cols
from pipeline_lib.data.checks import InvalidRow
from pipeline_lib.data.formats import Format, choose_format, mapping
from pipeline_lib.data.normalise import ROW_BUILDERS
from pipeline_lib.data.schemas import Schema, get_schema
from pipeline_lib.data.sources import SourcePart, open_source

MAX_EXAMPLES = 5  # skipped rows kept as examples, and first row numbers kept per reason


@dataclass(frozen=True)
class SkippedRow:
    """A row that was not kept: where it was and why."""

    source: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} of {self.source}: {self.reason}"


@dataclass
class LoadResult:
    """The kept rows (a ``datasets.Dataset`` with the schema's fixed features) and the tally."""

    rows: datasets.Dataset
    schema: str
    source: str
    format: str
    n_read: int
    skipped: dict[str, int]
    examples: list[SkippedRow]
    first_rows: dict[str, list[str]] = field(default_factory=dict)  # per reason, where its first rows were

    @property
    def n_kept(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        text = f"kept {self.n_kept} of {self.n_read} rows from {self.source}"
        if self.skipped:
            text += f"; skipped {self.n_read - self.n_kept}: {_reasons(self.skipped)}"
        return text


@dataclass
class _Tally:
    n_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[SkippedRow] = field(default_factory=list)
    first_rows: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, source: str, row: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(SkippedRow(source, row, reason))
        where = self.first_rows.setdefault(reason, [])
        if len(where) < MAX_EXAMPLES:
            where.append(f"{source}:{row}")


def load_rows(
    source: str | os.PathLike[str],
    schema: str,
    columns: Mapping[str, str] | None = None,
    split: str = "train",
    limit: int | None = None,
    format: str | None = None,
    name: str | None = None,
    revision: str | None = None,
) -> LoadResult:
    """Load ``source`` as validated ``schema`` rows.

    source: a hub id (``org/name``), a JSONL/JSON/CSV/Parquet file (optionally
        ``.gz``), or a folder of such files (all loaded, in sorted order).
    schema: ``prompt``, ``answer``, ``sft``, ``preference``, ``revision`` or ``messages``.
    columns: schema field -> source column (dotted paths reach nested values,
        e.g. ``choices.0.turns``); unmapped fields read their default columns.
    split, name, revision: the hub dataset's split, configuration and git
        revision; ignored for local files.
    limit: stop once this many rows are kept.
    format: ``hh-rlhf``, ``mt-bench``, ``plain``, or None / ``auto`` to detect.
    """
    spec = get_schema(schema)
    user_columns = cols.check_user_columns(spec, columns)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"data.limit must be a positive integer, not {limit!r}")
    tally = _Tally()
    rows: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    fmt: Format | None = None
    for part in open_source(str(source), split, name, revision):
        names = part.table.column_names
        if fmt is None:
            # A folder is one dataset cut into files: its first file decides the format.
            first_row = part.table[0] if len(part.table) else {}
            fmt = choose_format(format, spec.name, user_columns, names, first_row)
        resolved = cols.resolve(spec, mapping(fmt, spec.name, user_columns), names, part.label)
        extra = cols.unused(resolved, names)
        for index, raw in part.rows():
            if limit is not None and len(rows) >= limit:
                break
            tally.n_read += 1
            try:
                if raw is None:
                    raise InvalidRow(part.unreadable[index])
                row = _normalise(raw, spec, fmt, resolved, extra, part, index)
                if row["id"] in seen_ids:
                    raise InvalidRow("duplicate id")
            except InvalidRow as invalid:
                tally.skip(part.label, index, invalid.reason)
                continue
            seen_ids.add(row["id"])
            rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UserError(_nothing_kept(source, spec, tally))
    return LoadResult(
        rows=datasets.Dataset.from_list(rows, features=spec.features),
        schema=spec.name,
        source=str(source),
        format=fmt.name if fmt else "plain",
        n_read=tally.n_read,
        skipped=dict(tally.skipped.most_common()),
        examples=tally.examples,
        first_rows=tally.first_rows,
    )


def _normalise(
    raw: Mapping[str, Any],
    spec: Schema,
    fmt: Format,
    resolved: Mapping[str, str],
    extra: list[str],
    part: SourcePart,
    index: int,
) -> dict[str, Any]:
    fields = fmt.prepare({name: cols.lookup(raw, column) for name, column in resolved.items()})
    content = ROW_BUILDERS[spec.name](fields)
    row_id = checks.identifier(fields.get("id")) if "id" in resolved else content_hash(content)
    metadata = {name: _plain(raw[name]) for name in extra}
    return {"id": row_id, "source": part.label, "source_row": index, **content, "metadata": metadata}


def content_hash(content: Mapping[str, Any]) -> str:
    """A short id that stays the same as long as the row's content does."""
    encoded = json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a metadata value (CSV gaps arrive as NaN, Parquet may hold dates)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _reasons(skipped: Mapping[str, int], top: int | None = None) -> str:
    items = list(skipped.items())[:top]
    return ", ".join(f"{reason} ({count})" for reason, count in items)


def _nothing_kept(source: object, spec: Schema, tally: _Tally) -> str:
    if tally.n_read == 0:
        return f"{source} holds no rows"
    first = f"; first: {tally.examples[0]}" if tally.examples else ""
    return (
        f"no usable '{spec.name}' rows in {source}: all {tally.n_read} rows were skipped: "
        f"{_reasons(dict(tally.skipped.most_common()), top=3)}{first}"
    )
