"""The normalised row schemas that every loader produces.

Every row, whatever its schema, carries:

- ``id``: the source's id column when one is mapped (or a column named ``id``
  exists), else a hash of the row's content, so it is stable across reloads;
- ``source``: the file it came from, or ``org/name:split`` for a hub dataset;
- ``source_row``: its index in that file or split;
- ``metadata``: the source columns the schema did not use, as a JSON object
  (MT-Bench's ``category`` ends up here).

On top of those:

``prompt``
    ``turns``: the user turns to answer, in order (one for a single-turn prompt,
    two for MT-Bench; later turns are asked after the model's earlier answers);
    ``prompt``: always ``turns[0]``, for the many single-turn consumers;
    ``reference``: reference answers, one per turn (``""`` where a turn has
    none), or an empty list; ``messages``: the conversation the model answers,
    ending with a user turn: ``[turns[0]]`` as a user message, or the earlier
    turns of a dialogue (an HH-RLHF transcript before its final reply), in
    which case ``prompt`` and ``turns`` hold its last user turn.
``answer``
    ``turns``: answers to a prompt set, one per turn, joined to the prompts by
    ``id`` (MT-Bench reference answers); ``response``: always ``turns[0]``.
``sft``
    ``prompt`` and ``response``: one single-turn demonstration.
``preference``
    ``messages``: the dialogue before the compared replies; it ends with a user
    turn, and for a single-turn pair it is just that turn;
    ``prompt``: that last user turn; ``chosen`` and ``rejected``: the two
    candidate final assistant replies. The full dialogues are
    ``messages + [{"role": "assistant", "content": chosen}]`` (or ``rejected``).
``revision``
    ``messages`` and ``prompt`` as for ``preference``; ``original``: a reply
    to it, and ``revised``: that reply improved (FIGA's pairs).
``messages``
    ``messages``: one whole conversation to train on: an optional leading
    system turn, then user and assistant turns alternating, starting with user
    and ending with assistant.

Messages are ``{"role", "content"}`` dicts with role ``system``, ``user`` or
``assistant``.
"""

from dataclasses import dataclass

from datasets import Features, Json, List, Value

from pipeline_lib.core.errors import UserError

ROLES = ("system", "user", "assistant")

_MESSAGES = List({"role": Value("string"), "content": Value("string")})
_TEXTS = List(Value("string"))


@dataclass(frozen=True)
class InputField:
    """A schema field a user can map to a source column (``columns={name: column}``).

    ``defaults`` are the source columns tried, in order, when it is not mapped;
    the fuller one comes first, so a file of normalised rows reloads whole.
    """

    name: str
    defaults: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class Schema:
    name: str
    inputs: tuple[InputField, ...]
    features: Features

    def input_names(self) -> list[str]:
        return [field.name for field in self.inputs]


def _features(**content: object) -> Features:
    return Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "source_row": Value("int64"),
            **content,
            "metadata": Json(),
        }
    )


_ID = InputField("id", ("id",), required=False)

SCHEMAS: dict[str, Schema] = {
    "prompt": Schema(
        "prompt",
        (
            _ID,
            InputField("prompt", ("turns", "prompt", "messages")),
            InputField("reference", ("reference",), required=False),
        ),
        _features(prompt=Value("string"), turns=_TEXTS, reference=_TEXTS, messages=_MESSAGES),
    ),
    "answer": Schema(
        "answer",
        (_ID, InputField("response", ("turns", "response"))),
        _features(response=Value("string"), turns=_TEXTS),
    ),
    "sft": Schema(
        "sft",
        (_ID, InputField("prompt", ("prompt",)), InputField("response", ("response",))),
        _features(prompt=Value("string"), response=Value("string")),
    ),
    "preference": Schema(
        "preference",
        # The prompt is optional here because chosen/rejected may be whole dialogues.
        (
            _ID,
            InputField("prompt", ("messages", "prompt"), required=False),
            InputField("chosen", ("chosen",)),
            InputField("rejected", ("rejected",)),
        ),
        _features(prompt=Value("string"), messages=_MESSAGES, chosen=Value("string"), rejected=Value("string")),
    ),
    "revision": Schema(
        "revision",
        (
            _ID,
            InputField("prompt", ("messages", "prompt")),
            InputField("original", ("original",)),
            InputField("revised", ("revised",)),
        ),
        _features(prompt=Value("string"), messages=_MESSAGES, original=Value("string"), revised=Value("string")),
    ),
    "messages": Schema(
        "messages",
        (_ID, InputField("messages", ("messages",))),
        _features(messages=_MESSAGES),
    ),
}


def get_schema(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise UserError(f"unknown data schema '{name}'; choose one of: {', '.join(SCHEMAS)}") from None


def features_for(schema: str) -> Features:
    """The fixed Arrow features of a schema's rows, for stages that build such rows."""
    return get_schema(schema).features
