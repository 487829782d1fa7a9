"""Supervised fine-tuning on prompt-completion chat rows, with the loss on completion tokens only."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from pipeline_lib.config import TrainConfig
from pipeline_lib.training.runner import Objective


class CompletionSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with the model's own loss on CPU.

    TRL computes the loss through its fused LM head. On accelerators that
    saves memory; on CPU it projects every position in tiles and again in the
    backward pass, which made a SmolLM2 step ~45 % slower here. The model's
    own loss is the same number: mean NLL of the labelled tokens, divided by
    the labelled tokens of the whole accumulated batch.
    """

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if self.args.device.type == "cpu":
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def sft_objective(config: TrainConfig) -> Objective:
    # Rows arrive tokenised, masked and truncated (sft_data), so TRL's own preparation is skipped.
    return Objective(
        "sft",
        CompletionSFTTrainer,
        SFTConfig,
        {"max_length": config.max_length, "packing": False, "dataset_kwargs": {"skip_prepare_dataset": True}},
    )
