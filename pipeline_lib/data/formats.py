"""Known dataset layouts: which columns feed which schema fields, and how to read them.

``hh-rlhf``
    Anthropic HH-RLHF: ``chosen`` and ``rejected`` each hold a whole dialogue as
    a transcript ("\\n\\nHuman: ...\\n\\nAssistant: ..."). Gives ``preference``
    rows (the shared dialogue before the final reply as ``messages``, the two
    final replies as ``chosen`` / ``rejected``), ``messages`` rows (the
    chosen dialogue) or ``prompt`` rows (the chosen dialogue before its final
    reply: the user turn to answer, in context).
``mt-bench``
    FastChat's MT-Bench files. Questions (``question_id``, ``category``,
    ``turns``, optional ``reference``) give ``prompt`` rows; answer files such as
    the GPT-4 references (``question_id``, ``choices[0].turns``) give ``answer``
    rows. The question id becomes the row id, so answers join their questions.
``plain``
    Columns named like the schema's fields, or mapped with ``columns``.

Without an explicit format, the first known layout that fits the columns (and,
for HH-RLHF, the first row's text) is used, else ``plain``.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.checks import InvalidRow
from pipeline_lib.data.columns import has_column, lookup
from pipeline_lib.data.normalise import Fields
from pipeline_lib.data.schemas import SCHEMAS
from pipeline_lib.sampling.base import Message



def _unchanged(fields: Fields) -> Fields:
    return fields


@dataclass(frozen=True)
class Format:
    name: str
    # Per supported schema, the source column each field reads unless the user maps it.
    layouts: Mapping[str, Mapping[str, str]]
    # Whether a source with these columns and this first row is in this format,
    # given the format's columns overridden by the user's.
    sniff: Callable[[Mapping[str, str], Sequence[str], Mapping[str, Any]], bool]
    # Turns raw field values into what the schema's builder reads.
    prepare: Callable[[Fields], Fields] = field(default=_unchanged)


_HH_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(transcript: Any, field_name: str) -> list[Message]:
    """Split an HH-RLHF transcript into messages; the schema's checks judge their order."""
    if transcript is None:
        raise InvalidRow(f"missing {field_name}")
    parts = _HH_TURN.split(transcript) if isinstance(transcript, str) else []
    if len(parts) < 3 or parts[0].strip():
        raise InvalidRow(f"{field_name} is not an HH transcript")
    return [
        {"role": _HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _parse_hh_fields(fields: Fields) -> Fields:
    parsed = {
        name: parse_hh_transcript(value, name) if name in ("chosen", "rejected", "messages", "prompt") else value
        for name, value in fields.items()
    }
    if isinstance(parsed.get("prompt"), list) and "chosen" not in parsed:
        # As a prompt, a dialogue is asked up to its final reply.
        parsed["prompt"] = parsed["prompt"][:-1] if parsed["prompt"][-1]["role"] == "assistant" else parsed["prompt"]
    return parsed


def _looks_like_hh(mapping: Mapping[str, str], columns: Sequence[str], first_row: Mapping[str, Any]) -> bool:
    # A prompt column (or a user's mapping of the prompt elsewhere) means the rows are not transcripts.
    if "prompt" in columns or mapping.get("prompt", "chosen") != "chosen" or not _all_present(mapping, columns, first_row):
        return False
    transcript = lookup(first_row, mapping.get("chosen") or mapping.get("messages") or mapping["prompt"])
    return isinstance(transcript, str) and _HH_TURN.match(transcript) is not None


def _all_present(mapping: Mapping[str, str], columns: Sequence[str], first_row: Mapping[str, Any]) -> bool:
    return all(has_column(column, columns) for column in mapping.values())


PLAIN = Format("plain", {name: {} for name in SCHEMAS}, sniff=_all_present)
HH_RLHF = Format(
    "hh-rlhf",
    {
        "preference": {"chosen": "chosen", "rejected": "rejected"},
        "messages": {"messages": "chosen"},
        "prompt": {"prompt": "chosen"},
    },
    sniff=_looks_like_hh,
    prepare=_parse_hh_fields,
)
MT_BENCH = Format(
    "mt-bench",
    {
        "prompt": {"id": "question_id", "prompt": "turns"},
        "answer": {"id": "question_id", "response": "choices.0.turns"},
    },
    sniff=_all_present,
)
FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (HH_RLHF, MT_BENCH, PLAIN)}


def choose_format(
    name: str | None,
    schema: str,
    user_columns: Mapping[str, str],
    columns: Sequence[str],
    first_row: Mapping[str, Any],
) -> Format:
    """The named format (checked against the schema), or the first known one that fits."""
    if name not in (None, "auto"):
        fmt = FORMATS.get(name)
        if fmt is None:
            raise UserError(f"unknown data format '{name}'; choose one of: auto, {', '.join(FORMATS)}")
        if schema not in fmt.layouts:
            raise UserError(f"data format '{name}' gives {' or '.join(fmt.layouts)} rows, not schema '{schema}'")
        return fmt
    for fmt in (HH_RLHF, MT_BENCH):
        if schema in fmt.layouts and fmt.sniff(mapping(fmt, schema, user_columns), columns, first_row):
            return fmt
    return PLAIN


def mapping(fmt: Format, schema: str, user_columns: Mapping[str, str]) -> dict[str, str]:
    """The format's columns for the schema, overridden by the user's."""
    return {**fmt.layouts[schema], **user_columns}
