"""Logits for the positions a loss reads, not for the whole batch.

Every objective's loss reads position t's logits only where label t+1 is
trained. A (batch, length, vocabulary) logits tensor is the largest one a
training step builds: 49,152 columns for SmolLM2, over prompts that are often
most of the row (the reviser's input holds the prompt and the sample; its
target is a short verdict). transformers' ``logits_to_keep`` projects only the
kept positions through the LM head; softcapping and scaling still apply after
it.

Each row keeps its own span, from the position before its first label to its
last label, left-aligned and padded to the longest span with the span's last
position (whose labels are then ignored). Within a span positions stay
consecutive, so the losses need no change: position k's logits predict label
k+1 exactly as on the whole sequence, and IFT's discounted sums see the same
offsets.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache

import torch

from pipeline_lib.training.losses import IGNORE_INDEX


@dataclass(frozen=True)
class Spans:
    """Per row, the positions whose logits were kept, ``(batch, span)``, and which of them are real."""

    positions: torch.Tensor
    real: torch.Tensor

    def take(self, values: torch.Tensor, fill: int) -> torch.Tensor:
        """``values`` (batch, length) at the kept positions, ``fill`` on the padding."""
        return values.gather(1, self.positions).masked_fill(~self.real, fill)

    def put(self, target: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``target`` with ``values`` (batch, span) written back at the kept positions."""
        return target.scatter(1, self.positions, values)


def response_spans(labels: torch.Tensor) -> Spans:
    """Each row's span ``[first label − 1, last label]``; a row with nothing to train keeps position 0."""
    trained = labels != IGNORE_INDEX
    length = labels.shape[1]
    index = torch.arange(length, device=labels.device)
    first = torch.where(trained, index, length).amin(1)
    last = torch.where(trained, index, -1).amax(1)
    start = (first - 1).clamp(min=0)
    start = torch.where(last >= 0, start, 0)
    stop = torch.where(last >= 0, last, 0)  # inclusive
    width = int((stop - start).max()) + 1
    offsets = torch.arange(width, device=labels.device)
    positions = start[:, None] + offsets
    real = positions <= stop[:, None]
    return Spans(torch.minimum(positions, stop[:, None]), real)


def whole(labels: torch.Tensor) -> Spans:
    positions = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return Spans(positions, torch.ones_like(labels, dtype=torch.bool))


def response_logits(model: torch.nn.Module, labels: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, Spans]:
    """(logits on each row's response span, the spans): take labels and per-token columns with the spans.

    A model outside transformers' own classes (remote code may slice hidden
    states its own way), or one whose forward takes no ``logits_to_keep``,
    gets the whole sequence.
    """
    spans = _kept_spans(model, labels)
    if spans is None:
        return model(**inputs).logits, whole(labels)
    logits = model(**inputs, logits_to_keep=spans.positions).logits
    if logits.shape[:2] != spans.positions.shape:
        raise RuntimeError(f"{type(_unwrapped(model)).__name__} kept logits of shape {tuple(logits.shape)}")
    return logits, spans


def with_response_logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inputs`` for a model that computes its own loss from ``labels``: the response spans' labels, and
    ``logits_to_keep`` for their positions (or ``inputs`` as they are, as in ``response_logits``). The model's
    loss shifts labels within the span exactly as on the whole sequence, and every ignored position adds 0."""
    spans = _kept_spans(model, inputs["labels"])
    if spans is None:
        return inputs
    return {**inputs, "labels": spans.take(inputs["labels"], IGNORE_INDEX), "logits_to_keep": spans.positions}


def _kept_spans(model: torch.nn.Module, labels: torch.Tensor) -> Spans | None:
    """The response spans, or None where keeping them saves nothing or the model cannot keep logits."""
    spans = response_spans(labels)
    if spans.positions.shape[1] == labels.shape[1] or not _keeps_logits(type(_unwrapped(model))):
        return None
    return spans


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP / FSDP wrappers forward their keyword arguments
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


@cache
def _keeps_logits(model_type: type) -> bool:
    return model_type.__module__.startswith("transformers.") and (
        "logits_to_keep" in inspect.signature(model_type.forward).parameters
    )
