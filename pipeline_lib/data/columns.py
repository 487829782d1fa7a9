"""Map schema fields to source columns, and read mapped values from a row.

A column reference is a column name or a dotted path into nested values, with
list indices as numbers: ``choices.0.turns`` reads ``row["choices"][0]["turns"]``.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.schemas import Schema


def root(path: str, columns: Sequence[str]) -> str:
    """The top-level column a reference reads (a column may itself contain dots)."""
    return path if path in columns else path.split(".", 1)[0]


def has_column(path: str, columns: Sequence[str]) -> bool:
    return root(path, columns) in columns


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in ``row``, or None where any step is missing."""
    if path in row:
        return row[path]
    value: Any = row
    for step in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def check_user_columns(schema: Schema, columns: Mapping[str, str] | None) -> dict[str, str]:
    """Reject mappings for fields the schema does not have, before any file is read."""
    columns = dict(columns or {})
    allowed = schema.input_names()
    for field, column in columns.items():
        if field not in allowed:
            raise UserError(
                f"data.columns maps unknown field '{field}' for schema '{schema.name}'; fields: {', '.join(allowed)}"
            )
        if not isinstance(column, str) or not column:
            raise UserError(f"data.columns['{field}'] must be a column name, not {column!r}")
    return columns


def resolve(schema: Schema, mapped: Mapping[str, str], columns: Sequence[str], label: str) -> dict[str, str]:
    """Each input field's source column: the mapped one (which must exist), else a default.

    ``mapped`` holds the user's mapping over the format's. A required field with
    no column is a ``UserError``; an optional one is left out.
    """
    available = ", ".join(columns)
    resolved: dict[str, str] = {}
    for field in schema.inputs:
        if field.name in mapped:
            column = mapped[field.name]
            if not has_column(column, columns):
                raise UserError(
                    f"column '{column}' (mapped to '{field.name}') not found in {label}; available columns: {available}"
                )
            resolved[field.name] = column
            continue
        default = next((name for name in field.defaults if name in columns), None)
        if default is not None:
            resolved[field.name] = default
        elif field.required:
            raise UserError(
                f"{label} has no column for '{field.name}' (looked for {', '.join(field.defaults)}); "
                f"map one with data.columns; available columns: {available}"
            )
    return resolved


def unused(resolved: Mapping[str, str], columns: Sequence[str]) -> list[str]:
    """Source columns no field reads; they are kept as row metadata."""
    used = {root(column, columns) for column in resolved.values()}
    return [column for column in columns if column not in used]
