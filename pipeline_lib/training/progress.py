"""One progress bar per training run, with the latest loss on it instead of a printed dict per log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging as hf_logging


class LossBar(ProgressCallback):
    """transformers' step bar, named, and updated in place by each log rather than printing a line."""

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.description, unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)


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
