"""Prompt-completion chat rows -> token ids, and labels that train on the completion only.

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


def tokenize_sft_rows(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    fields: tuple[str, ...] = ("completion",),
    ensure_eos: bool = False,
) -> SFTData:
    """Render, tokenise, mask the prompt and cut each sequence to ``max_length`` tokens (keeping its start).

    Each of ``fields`` is a completion of the row's prompt. ``ensure_eos``
    appends the tokenizer's EOS to a completion whose template left none.
    """
    if not rows:
        raise UserError("no training rows: the training dataset is empty")
    rendered = [_render_row(tokenizer, i, row, fields) for i, row in enumerate(rows)]
    prompt_ids = tokenizer([prompt for prompt, _ in rendered], add_special_tokens=False)["input_ids"]
    completion_ids = {
        field: tokenizer([texts[n] for _, texts in rendered], add_special_tokens=False)["input_ids"]
        for n, field in enumerate(fields)
    }
    eos = tokenizer.eos_token_id if ensure_eos else None

    columns: dict[str, list] = {name: [] for field in fields for name in _names(fields, field)} | {"length": []}
    truncated = 0
    for index, prompt in enumerate(prompt_ids):
        sequences = []
        cut = False
        for field in fields:
            completion = completion_ids[field][index]
            if eos is not None and eos not in completion:
                completion = completion + [eos]
            cut |= len(prompt) + len(completion) > max_length
            sequences.append((prompt + completion)[:max_length])
        truncated += cut
        if any(len(ids) <= len(prompt) for ids in sequences):
            continue
        for field, ids in zip(fields, sequences, strict=True):
            ids_name, labels_name = _names(fields, field)
            columns[ids_name].append(ids)
            columns[labels_name].append([IGNORE_INDEX] * len(prompt) + ids[len(prompt) :])
        columns["length"].append(sum(map(len, sequences)))

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


def _names(fields: tuple[str, ...], field: str) -> tuple[str, str]:
    """Column names of one completion's token ids and labels."""
    return ("input_ids", "labels") if len(fields) == 1 else (f"{field}_input_ids", f"{field}_labels")


def _render_row(
    tokenizer: PreTrainedTokenizerBase, index: int, row: Mapping[str, Any], fields: tuple[str, ...]
) -> tuple[str, list[str]]:
    """(prompt text ending in the assistant header, the completion text of each field) of one row."""
    if not isinstance(row, Mapping) or any(name not in row for name in ("prompt", *fields)):
        wanted = " and ".join(repr(name) for name in ("prompt", *fields))
        raise UserError(f"training row {index} needs {wanted} fields, got {_brief(row)}")
    prompt = row["prompt"]
    if not prompt or not isinstance(prompt, str | list):
        raise UserError(f"training row {index}: 'prompt' must be a non-empty message list or string, got {_brief(row)}")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    try:
        prompt_text = render_chat(tokenizer, messages, add_generation_prompt=True)
    except UserError as error:
        raise UserError(f"training row {index}: {error}") from None
    return prompt_text, [_completion_text(tokenizer, index, row, field, messages, prompt_text) for field in fields]


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
    try:
        full_text = render_chat(tokenizer, messages + completion, add_generation_prompt=False)
    except UserError as error:
        raise UserError(f"training row {index}: {error}") from None
    if not full_text.startswith(prompt_text):
        raise UserError(
            f"training row {index}: the chat template renders the prompt differently once the {field!r} follows, "
            "so the completion cannot be separated from it"
        )
    return full_text[len(prompt_text) :]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
