"""Build each schema's content fields from a row's mapped input fields.

``fields`` maps the schema's input field names (see ``schemas.SCHEMAS``) to the
raw values read from the source (None where absent). Each builder returns the
schema's content fields or raises ``InvalidRow``.
"""

from collections.abc import Callable, Mapping
from typing import Any

from pipeline_lib.data import checks
from pipeline_lib.data.checks import InvalidRow
from pipeline_lib.sampling.base import Message

Fields = Mapping[str, Any]


def _prompt(fields: Fields) -> dict[str, Any]:
    value = fields.get("prompt")
    reference = checks.references(fields.get("reference"))
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        # A dialogue to continue: its last user turn is the prompt, the earlier turns its context.
        context = checks.messages(value, "prompt", last_role="user")
        last = context[-1]["content"]
        return {"prompt": last, "turns": [last], "reference": reference, "messages": context}
    turns = checks.turns(value, "prompt")
    return {"prompt": turns[0], "turns": turns, "reference": reference, "messages": [{"role": "user", "content": turns[0]}]}


def _answer(fields: Fields) -> dict[str, Any]:
    turns = checks.turns(fields.get("response"), "response")
    return {"response": turns[0], "turns": turns}


def _sft(fields: Fields) -> dict[str, Any]:
    return {
        "prompt": checks.text(fields.get("prompt"), "prompt"),
        "response": checks.text(fields.get("response"), "response"),
    }


def _preference(fields: Fields) -> dict[str, Any]:
    """Either a prompt (text or messages) with two reply texts, or two whole dialogues."""
    chosen, rejected = fields.get("chosen"), fields.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        context, chosen, rejected = _split_dialogues(chosen, rejected)
    else:
        context = _prompt_messages(fields.get("prompt"))
        chosen, rejected = checks.text(chosen, "chosen"), checks.text(rejected, "rejected")
    if chosen.strip() == rejected.strip():
        raise InvalidRow("chosen == rejected")
    return {"prompt": context[-1]["content"], "messages": context, "chosen": chosen, "rejected": rejected}


def _split_dialogues(chosen: Any, rejected: Any) -> tuple[list[Message], str, str]:
    chosen_dialogue = checks.messages(chosen, "chosen", last_role="assistant")
    rejected_dialogue = checks.messages(rejected, "rejected", last_role="assistant")
    if chosen_dialogue[:-1] != rejected_dialogue[:-1]:
        raise InvalidRow("chosen and rejected differ before the final reply")
    return chosen_dialogue[:-1], chosen_dialogue[-1]["content"], rejected_dialogue[-1]["content"]


def _prompt_messages(value: Any) -> list[Message]:
    if isinstance(value, list):
        return checks.messages(value, "prompt", last_role="user")
    return [{"role": "user", "content": checks.text(value, "prompt")}]


def _revision(fields: Fields) -> dict[str, Any]:
    context = _prompt_messages(fields.get("prompt"))
    original, revised = checks.text(fields.get("original"), "original"), checks.text(fields.get("revised"), "revised")
    if original.strip() == revised.strip():
        raise InvalidRow("original == revised")
    return {"prompt": context[-1]["content"], "messages": context, "original": original, "revised": revised}


def _messages(fields: Fields) -> dict[str, Any]:
    return {"messages": checks.messages(fields.get("messages"), "messages", last_role="assistant")}


ROW_BUILDERS: dict[str, Callable[[Fields], dict[str, Any]]] = {
    "prompt": _prompt,
    "answer": _answer,
    "sft": _sft,
    "preference": _preference,
    "revision": _revision,
    "messages": _messages,
}
