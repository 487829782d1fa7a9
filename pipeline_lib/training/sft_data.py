"""Chat rows -> token ids, and labels that train on the completion (or every assistant turn) only.

Tokenised here rather than inside TRL because TRL 1.16 truncates rows and then
silently drops those left without completion tokens; a round that loses rows
must say how many. The prompt is rendered and tokenised exactly as the
samplers do it (chat template with the generation prompt, no extra special
tokens) and the completion is appended, so the model is trained on the very
context it samples from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling import render_chat
from pipeline_lib.training.losses import IGNORE_INDEX

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTData:
    """Tokenised training rows and what preparing them cost.

    Columns: ``input_ids`` and ``labels`` for one completion per row; for
    several (``chosen``/``rejected``, ``revised``/``original``) one pair per
    completion, ``<field>_input_ids`` and ``<field>_labels``. ``length`` is a
    row's token count over all its sequences (batches group by it).
    """

    dataset: Dataset
    rows: int  # rows given
    truncated: int  # rows with a sequence longer than max_length, cut to it (the dropped ones included)
    dropped: int  # truncated rows with a sequence left without completion tokens, left out of training
    completion_tokens: int  # tokens that carry a label, per epoch
    total_tokens: int  # all tokens, per epoch


Piece = tuple[str, bool]  # a stretch of rendered text, and whether the model is trained on it


def tokenize_sft_rows(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    fields: tuple[str, ...] = ("completion",),
    ensure_eos: bool = False,
) -> SFTData:
    """Render, tokenise, mask what is not trained on and cut each sequence to ``max_length`` tokens (keeping its start).

    Each of ``fields`` is a completion of the row's prompt. A row may instead
    hold ``messages``, a whole conversation (with a single completion field):
    every assistant turn is trained on, everything else is masked.
    ``ensure_eos`` appends the tokenizer's EOS to a completion whose template left none.
    """
    if not rows:
        raise UserError("no training rows: the training dataset is empty")
    pieces = [_render_row(tokenizer, i, row, fields) for i, row in enumerate(rows)]
    flat = [text for row in pieces for sequence in row for text, _ in sequence]
    ids = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter(())
    eos = tokenizer.eos_token_id if ensure_eos else None

    columns: dict[str, list] = {name: [] for field in fields for name in _names(fields, field)} | {"length": []}
    truncated = 0
    for row in pieces:
        sequences = [_sequence(sequence, ids, eos) for sequence in row]
        truncated += any(len(sequence_ids) > max_length for sequence_ids, _ in sequences)
        sequences = [(sequence_ids[:max_length], labels[:max_length]) for sequence_ids, labels in sequences]
        if any(all(label == IGNORE_INDEX for label in labels) for _, labels in sequences):
            continue
        for field, (sequence_ids, labels) in zip(fields, sequences, strict=True):
            ids_name, labels_name = _names(fields, field)
            columns[ids_name].append(sequence_ids)
            columns[labels_name].append(labels)
        columns["length"].append(sum(len(sequence_ids) for sequence_ids, _ in sequences))

    kept = len(columns["length"])
    dropped = len(rows) - kept
    if not kept:
        raise UserError(
            f"all {len(rows)} training rows have prompts of train.max_length={max_length} tokens or more, "
            "so no completion token is left to train on; raise train.max_length"
        )
    if dropped:
        _log.warning(
            "left out %d of %d training rows whose prompts fill train.max_length=%d tokens",
            dropped,
            len(rows),
            max_length,
        )
    label_columns = [columns[_names(fields, field)[1]] for field in fields]
    return SFTData(
        dataset=Dataset.from_dict(columns),
        rows=len(rows),
        truncated=truncated,
        dropped=dropped,
        completion_tokens=sum(len(row) - row.count(IGNORE_INDEX) for labels in label_columns for row in labels),
        total_tokens=sum(columns["length"]),
    )


def _sequence(pieces: list[Piece], ids: Any, eos: int | None) -> tuple[list[int], list[int]]:
    """One sequence's token ids and labels, from its pieces' ids (taken in order from ``ids``)."""
    sequence_ids: list[int] = []
    labels: list[int] = []
    for index, (_, trained) in enumerate(pieces):
        piece = next(ids)
        if trained and eos is not None and index == len(pieces) - 1 and eos not in piece:
            piece = piece + [eos]
        sequence_ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return sequence_ids, labels


def _names(fields: tuple[str, ...], field: str) -> tuple[str, str]:
    """Column names of one completion's token ids and labels."""
    return ("input_ids", "labels") if len(fields) == 1 else (f"{field}_input_ids", f"{field}_labels")


def _render_row(
    tokenizer: PreTrainedTokenizerBase, index: int, row: Mapping[str, Any], fields: tuple[str, ...]
) -> list[list[Piece]]:
    """Each field's sequence as pieces: the prompt (ending in the assistant header), then the completion;
    or, for a conversation, its turns with every assistant reply trained on."""
    if isinstance(row, Mapping) and "messages" in row and len(fields) == 1:
        return [_conversation_pieces(tokenizer, index, row["messages"])]
    if not isinstance(row, Mapping) or any(name not in row for name in ("prompt", *fields)):
        wanted = " and ".join(repr(name) for name in ("prompt", *fields))
        raise UserError(f"training row {index} needs {wanted} fields (or 'messages'), got {_brief(row)}")
    prompt = row["prompt"]
    if not prompt or not isinstance(prompt, str | list):
        raise UserError(f"training row {index}: 'prompt' must be a non-empty message list or string, got {_brief(row)}")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    prompt_text = _render(tokenizer, index, messages, add_generation_prompt=True)
    return [
        [(prompt_text, False), (_completion_text(tokenizer, index, row, field, messages, prompt_text), True)]
        for field in fields
    ]


def _conversation_pieces(tokenizer: PreTrainedTokenizerBase, index: int, messages: Any) -> list[Piece]:
    """A whole conversation cut where each assistant turn starts and ends, so only the replies carry loss.

    Each cut is found by rendering the conversation up to that turn, so it
    falls exactly where the template puts it, default system prompt and all.
    """
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
        raise UserError(f"training row {index}: 'messages' must be a conversation ending with an assistant turn")
    pieces: list[Piece] = []
    done = ""
    for turn, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, index, messages[:turn], add_generation_prompt=True)
        after = _render(tokenizer, index, messages[: turn + 1], add_generation_prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            raise UserError(
                f"training row {index}: the chat template renders turn {turn} differently once later turns follow, "
                "so the assistant's replies cannot be separated from the rest"
            )
        pieces += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    return pieces


def _render(tokenizer: PreTrainedTokenizerBase, index: int, messages: list, add_generation_prompt: bool) -> str:
    try:
        return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    except UserError as error:
        raise UserError(f"training row {index}: {error}") from None


def _completion_text(
    tokenizer: PreTrainedTokenizerBase, index: int, row: Mapping[str, Any], field: str, messages: list, prompt_text: str
) -> str:
    completion = row[field]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    if not completion or not isinstance(completion, list):
        raise UserError(
            f"training row {index}: {field!r} must be a non-empty message list or string, got {_brief(row)}"
        )
    full_text = _render(tokenizer, index, messages + completion, add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise UserError(
            f"training row {index}: the chat template renders the prompt differently once the {field!r} follows, "
            "so the completion cannot be separated from it"
        )
    return full_text[len(prompt_text) :]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
