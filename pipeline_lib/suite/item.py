"""The records the suite is made of: an item, a draft of one, and a verdict.

An item carries everything needed to check an answer later (its ``spec``), so
a row read back from Parquet verifies exactly like the item that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline_lib.core.errors import UserError

ROW_FIELDS = ("id", "split", "family", "difficulty", "prompt", "reference", "spec")


class Draft(NamedTuple):
    """What a family builder returns; generation adds identity around it."""

    prompt: str
    reference: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SuiteItem:
    id: str
    split: str
    family: str
    difficulty: int
    prompt: str
    reference: str
    spec: dict[str, Any]

    def to_row(self) -> dict[str, str | int]:
        """Flat row for Parquet: the spec travels as a JSON string."""
        return {
            "id": self.id,
            "split": self.split,
            "family": self.family,
            "difficulty": self.difficulty,
            "prompt": self.prompt,
            "reference": self.reference,
            "spec": json.dumps(self.spec, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SuiteItem:
        missing = [name for name in ROW_FIELDS if name not in row]
        if missing:
            raise UserError(f"suite row {row.get('id', '?')!r} lacks field(s): {', '.join(missing)}")
        try:
            difficulty = int(row["difficulty"])
        except (TypeError, ValueError):
            raise UserError(f"suite row {row['id']!r}: field 'difficulty' must be an integer") from None
        return cls(
            id=str(row["id"]),
            split=str(row["split"]),
            family=str(row["family"]),
            difficulty=difficulty,
            prompt=str(row["prompt"]),
            reference=str(row["reference"]),
            spec=parse_spec(row["spec"], row_id=str(row["id"])),
        )


def parse_spec(raw: str | Mapping[str, Any], row_id: str) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        spec = dict(raw)
    else:
        try:
            spec = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as error:
            raise UserError(f"suite row {row_id!r}: field 'spec' is not valid JSON ({error})") from None
    if not isinstance(spec, dict) or "check" not in spec:
        raise UserError(f"suite row {row_id!r}: field 'spec' must be a JSON object with a 'check' key")
    return spec


def spec_of(item_or_row: SuiteItem | Mapping[str, Any]) -> dict[str, Any]:
    """The verifier spec of an item or of a row (as stored, or as read back)."""
    if isinstance(item_or_row, SuiteItem):
        return item_or_row.spec
    if "spec" not in item_or_row:
        raise UserError(f"suite row {item_or_row.get('id', '?')!r} lacks field: spec")
    return parse_spec(item_or_row["spec"], row_id=str(item_or_row.get("id", "?")))
