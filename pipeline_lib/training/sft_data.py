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

from pipeline_lib.errors import UserError
from pipeline_lib.sampling import render_chat

IGNORE_INDEX = -100  # the label value the loss skips (PyTorch's cross-entropy default)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTData:
    """Tokenised training rows (columns ``input_ids`` and ``labels``) and what preparing them cost."""

    dataset: Dataset
    rows: int  # rows given
    truncated: int  # rows longer than max_length, cut to it (the dropped ones included)
    dropped: int  # truncated rows with no completion token left, left out of training
    completion_tokens: int  # tokens that carry a label, per epoch
    total_tokens: int  # all tokens, per epoch


def tokenize_sft_rows(
    rows: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> SFTData:
    """Render, tokenise, mask the prompt and cut each row to ``max_length`` tokens (keeping its start)."""
    if not rows:
        raise UserError("no training rows: the SFT dataset is empty")
    prompts, completions = zip(*(_render_row(tokenizer, i, row) for i, row in enumerate(rows)), strict=True)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]

    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    truncated = 0
    for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
        ids = (prompt + completion)[:max_length]
        truncated += len(prompt) + len(completion) > max_length
        if len(ids) <= len(prompt):
            continue
        input_ids.append(ids)
        labels.append([IGNORE_INDEX] * len(prompt) + ids[len(prompt) :])

    dropped = len(rows) - len(input_ids)
    if not input_ids:
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
    return SFTData(
        dataset=Dataset.from_dict({"input_ids": input_ids, "labels": labels}),
        rows=len(rows),
        truncated=truncated,
        dropped=dropped,
        completion_tokens=sum(len(ids) - row.count(IGNORE_INDEX) for ids, row in zip(input_ids, labels, strict=True)),
        total_tokens=sum(map(len, input_ids)),
    )


def _render_row(tokenizer: PreTrainedTokenizerBase, index: int, row: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt text ending in the assistant header, completion text) of one row."""
    if not isinstance(row, Mapping) or "prompt" not in row or "completion" not in row:
        raise UserError(f"training row {index} needs 'prompt' and 'completion' fields, got {_brief(row)}")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    if not prompt or not isinstance(prompt, str | list) or not completion or not isinstance(completion, list):
        raise UserError(
            f"training row {index}: 'prompt' must be a non-empty message list or string and 'completion' "
            f"a non-empty message list or string, got {_brief(row)}"
        )
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    try:
        prompt_text = render_chat(tokenizer, messages, add_generation_prompt=True)
        full_text = render_chat(tokenizer, messages + completion, add_generation_prompt=False)
    except UserError as error:
        raise UserError(f"training row {index}: {error}") from None
    if not full_text.startswith(prompt_text):
        raise UserError(
            f"training row {index}: the chat template renders the prompt differently once the completion follows, "
            "so the completion cannot be separated from it"
        )
    return prompt_text, full_text[len(prompt_text) :]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
