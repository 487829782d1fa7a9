"""Batches for the trainers that override ``compute_loss``: right-padded tensors, masks from true lengths.

Attention masks come from each sequence's length, never from comparing ids
with the pad id: SmolLM2 pads with its EOS, and a mask built from ids would
hide the real EOS the model must learn to emit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pipeline_lib.training.losses import IGNORE_INDEX


def pad(sequences: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([list(seq) + [value] * (length - len(seq)) for seq in sequences], dtype=torch.long)


def stack_sequences(
    groups: Sequence[Sequence[Mapping[str, Sequence[int]]]], pad_id: int, extra: Mapping[str, int] = {}
) -> dict[str, torch.Tensor]:
    """One batch from rows of (``input_ids``, ``labels``, and any ``extra`` columns, padded with their value).

    ``groups`` lists the batch's rows in the order they go into the batch
    (e.g. all chosen then all rejected, or revised/original interleaved).
    """
    rows = [row for group in groups for row in group]
    length = max(len(row["input_ids"]) for row in rows)
    batch = {
        "input_ids": pad([row["input_ids"] for row in rows], pad_id, length),
        "labels": pad([row["labels"] for row in rows], IGNORE_INDEX, length),
        "attention_mask": pad([[1] * len(row["input_ids"]) for row in rows], 0, length),
    }
    for name, value in extra.items():
        batch[name] = pad([row[name] for row in rows], value, length)
    return batch


class PairCollator:
    """Rows holding two sequences (``<first>_input_ids``...) -> one batch of 2B sequences.

    ``interleave``: first₀, second₀, first₁, second₁... (FIGA's layout);
    otherwise all firsts then all seconds (DPO's concatenated forward).
    Float columns named in ``floats`` (e.g. reference log-probabilities) follow
    the same order.
    """

    def __init__(
        self, pad_id: int, first: str, second: str, *, interleave: bool, extra: Mapping[str, int] = {}, floats=()
    ) -> None:
        self.pad_id, self.first, self.second = pad_id, first, second
        self.interleave, self.extra, self.floats = interleave, dict(extra), tuple(floats)

    def _side(self, row: Mapping[str, Any], side: str) -> dict[str, Any]:
        names = ("input_ids", "labels", *self.extra, *self.floats)
        return {name: row[f"{side}_{name}"] for name in names if f"{side}_{name}" in row}

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        firsts = [self._side(row, self.first) for row in rows]
        seconds = [self._side(row, self.second) for row in rows]
        ordered = [x for pair in zip(firsts, seconds, strict=True) for x in pair] if self.interleave else firsts + seconds
        batch = stack_sequences([ordered], self.pad_id, self.extra)
        for name in self.floats:
            batch[name] = torch.tensor([row[name] for row in ordered], dtype=torch.float32)
        return batch


class SequenceCollator:
    """Rows of one sequence (``input_ids``, ``labels``) -> a right-padded batch."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return stack_sequences([rows], self.pad_id)
