"""Read a JSON Lines file line by line, so that a line that does not parse costs only that row.

``datasets`` rejects a whole JSON Lines file over one bad line; ``sources`` falls
back to this reader then. Rows are numbered the way ``datasets`` numbers them:
blank lines are skipped and get no number. Every column is stored as ``Json``,
so each value keeps the type it has in the file even where rows disagree.
"""

import json
from pathlib import Path
from typing import Any

import datasets
import fsspec

from pipeline_lib.core.errors import UserError

NOT_JSON = "not valid JSON"
NOT_AN_OBJECT = "not a JSON object"


def read_json_lines(path: Path) -> tuple[datasets.Dataset, dict[int, str]]:
    """The file's JSON objects as a table, and the numbers of the other rows with why they are not one.

    A file without a single JSON object is a ``UserError``; a damaged compressed
    file raises what its decompressor raises (``OSError``, ``EOFError``, ...).
    """
    records: list[dict[str, Any]] = []
    unreadable: dict[int, str] = {}
    first_problem = ""
    with fsspec.open(str(path), "rb", compression="infer") as handle:
        for line in handle:
            if not line.strip():
                continue
            number = len(records) + len(unreadable)
            try:
                record = json.loads(line)
            except ValueError as error:
                unreadable[number] = NOT_JSON
                first_problem = first_problem or f"row {number}: {NOT_JSON} ({error})"
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                unreadable[number] = NOT_AN_OBJECT
                first_problem = first_problem or f"row {number}: {NOT_AN_OBJECT}"
    if not records:
        if not unreadable:
            raise UserError(f"{path} holds no rows")
        raise UserError(
            f"cannot read {path} as JSON Lines: none of its {len(unreadable)} rows is a JSON object; "
            f"first: {first_problem}"
        )
    columns = dict.fromkeys(name for record in records for name in record)
    features = datasets.Features({name: datasets.Json() for name in columns})
    return datasets.Dataset.from_list(records, features=features), unreadable
