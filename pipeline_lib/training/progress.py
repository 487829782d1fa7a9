"""Training's part of the stage's display: its steps out of the total, with the latest loss, instead of a
printed dict per log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging as hf_logging

from pipeline_lib.core import progress


class LossBar(TrainerCallback):
    """Steps and loss on the display of the stage the trainer runs in (nothing outside a stage)."""

    def __init__(self, description: str) -> None:
        self.description = description

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            progress.phase(f"training {self.description}", total=state.max_steps, done=state.global_step, unit="step")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            progress.advance(1)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and logs and "loss" in logs:
            progress.note(loss=f"{logs['loss']:.4g}")


def use_loss_bar(trainer: Trainer, description: str, show: bool) -> None:
    """Replace Trainer's own bar or log printer with a ``LossBar`` (or with nothing when not shown)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if show:
        trainer.add_callback(LossBar(description))


@contextmanager
def no_transformers_bars() -> Iterator[None]:
    """Hide transformers' bars for loading and writing weights, which would outnumber the training bar."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
