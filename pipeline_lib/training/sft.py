"""Supervised fine-tuning on prompt-completion chat rows, with the loss on completion tokens only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from pipeline_lib.config import TrainConfig
from pipeline_lib.models.loading import load_tokenizer
from pipeline_lib.training.runner import Objective, fine_tune
from pipeline_lib.training.sft_data import tokenize_sft_rows


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


def train_sft(
    model_path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    config: TrainConfig,
    seed: int = 0,
    dtype: str = "float32",
    work_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model_path`` on ``rows`` ({"prompt": messages, "completion": messages}) into ``out_dir``.

    Full or LoRA (merged into the saved weights) per ``config.mode``; ``config.objective``
    is not read, since choosing this function is choosing SFT. ``out_dir`` becomes a
    complete HF model folder, written beside it and renamed into place, or written
    straight into it when it is an existing empty folder (a caller's scratch folder
    inside an atomic stage). ``work_dir`` holds the trainer's scratch files (a
    removed temp folder by default). Returns
    JSON-serialisable metrics: losses, steps, token counts, throughput, and how many rows
    ``config.max_length`` truncated or left without completion tokens (``dropped``).
    """
    tokenizer = load_tokenizer(model_path, padding_side="right")
    data = tokenize_sft_rows(rows, tokenizer, config.max_length)
    metrics = fine_tune(
        sft_objective(config),
        model_path,
        tokenizer,
        data.dataset,
        out_dir,
        config,
        seed=seed,
        dtype=dtype,
        work_dir=work_dir,
        progress=progress,
    )
    return {
        **metrics,
        "rows": data.rows,
        "examples": len(data.dataset),
        "truncated": data.truncated,
        "dropped": data.dropped,
        "completion_tokens": data.completion_tokens,
        "total_tokens": data.total_tokens,
    }
