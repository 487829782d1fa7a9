"""Per-value checks that turn one raw field into a normalised value or reject the row.

A rejected row raises ``InvalidRow`` with a short reason; the loader counts rows
by reason, so reasons name the field but never the row's content.
"""

import math
from typing import Any

from pipeline_lib.data.schemas import ROLES
from pipeline_lib.sampling.base import Message



class InvalidRow(Exception):
    """This row cannot be normalised; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def text(value: Any, field: str) -> str:
    if value is None:
        raise InvalidRow(f"missing {field}")
    if not isinstance(value, str):
        raise InvalidRow(f"{field} is not a string")
    if not value.strip():
        raise InvalidRow(f"empty {field}")
    return value


def turns(value: Any, field: str) -> list[str]:
    """A string (one turn) or a non-empty list of non-empty strings."""
    if isinstance(value, str) or value is None:
        return [text(value, field)]
    if not isinstance(value, list) or not all(isinstance(turn, str) for turn in value):
        raise InvalidRow(f"{field} is not a string or a list of strings")
    if not value or not all(turn.strip() for turn in value):
        raise InvalidRow(f"empty {field}")
    return value


def references(value: Any) -> list[str]:
    """Reference answers per turn; missing means none, and an empty one means none for that turn."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(answer, str) for answer in value):
        raise InvalidRow("reference is not a string or a list of strings")
    return value


def identifier(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise InvalidRow("missing id")
    # A CSV id column with a gap is read as floats: 7.0 is still the id "7".
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # bool is an int subclass, and True as an id is surely a mapping mistake.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRow("id is not a string or integer")
    if isinstance(value, str) and not value.strip():
        raise InvalidRow("empty id")
    return str(value)


def messages(value: Any, field: str, last_role: str) -> list[Message]:
    """A conversation: optional system turn, then user/assistant alternating from user.

    ``last_role`` is the role the conversation must end with. Extra keys in a
    message (``name``, ...) are dropped.
    """
    if value is None:
        raise InvalidRow(f"missing {field}")
    if not isinstance(value, list) or not value or not all(_is_message(item) for item in value):
        raise InvalidRow(f"{field} is not a list of role/content messages")
    result = [{"role": item["role"], "content": item["content"]} for item in value]
    if any(message["role"] not in ROLES for message in result):
        raise InvalidRow(f"unknown role in {field}")
    if any(not message["content"].strip() for message in result):
        raise InvalidRow(f"empty turn in {field}")
    dialogue = result[1:] if result[0]["role"] == "system" else result
    expected = ["user", "assistant"] * len(dialogue)
    if not dialogue or [message["role"] for message in dialogue] != expected[: len(dialogue)]:
        raise InvalidRow(f"{field} turns do not alternate user/assistant")
    if dialogue[-1]["role"] != last_role:
        raise InvalidRow(f"{field} does not end with a turn by the {last_role}")
    return result


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("role"), str) and isinstance(item.get("content"), str)
