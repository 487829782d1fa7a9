"""Supervised fine-tuning on prompt-completion chat rows, with the loss on completion tokens only."""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.logits import response_logits, with_response_logits
from pipeline_lib.training.losses import IGNORE_INDEX, sft_loss
from pipeline_lib.training.runner import Objective


class CompletionSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with the loss METHODS.md §7 specifies.

    ``reduction="sequence"`` (the default): each sequence's mean response-token
    NLL, averaged over the micro-batch (``losses.sft_loss``). ``"token"``: the
    mean over all labelled tokens of the accumulated batch; on CPU through the
    model's own loss rather than TRL's fused LM head, which projects every
    position in tiles and again in the backward pass (~45 % slower here for
    the same number).
    """

    def __init__(self, *args: Any, reduction: str = "sequence", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reduction = reduction
        if reduction == "sequence":
            self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by accumulation

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if self.reduction == "sequence":
            logits, spans = response_logits(
                model, inputs["labels"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
            loss = sft_loss(logits, spans.take(inputs["labels"], IGNORE_INDEX))
            return (loss, {"logits": logits}) if return_outputs else loss
        if self.args.device.type == "cpu":
            return Trainer.compute_loss(self, model, with_response_logits(model, inputs), return_outputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def sft_objective(config: TrainConfig) -> Objective:
    # Rows arrive tokenised, masked and truncated (sft_data), so TRL's own preparation is skipped.
    return Objective(
        "sft",
        functools.partial(CompletionSFTTrainer, reduction=config.sft_reduction),
        SFTConfig,
        {"max_length": config.max_length, "packing": False, "dataset_kwargs": {"skip_prepare_dataset": True}},
    )
