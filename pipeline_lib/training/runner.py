"""One fine-tuning run on a TRL / transformers trainer, whatever the objective.

Load the model, wrap it in LoRA if asked, train, merge the adapter back, save a
plain HF folder, and report. An ``Objective`` says what differs between
objectives: the trainer class (a TRL trainer, or a subclass that overrides
``compute_loss``) and its arguments class with values of its own. The
optimizer comes from the recipe, through ``optimizers.optimizer_spec``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from datasets import Dataset
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from pipeline_lib.core import interrupts
from pipeline_lib.core.errors import UserError
from pipeline_lib.models.loading import align_pad_id, load_causal_lm
from pipeline_lib.store import atomic_dir
from pipeline_lib.training.config import LoraConfig, TrainConfig
from pipeline_lib.training.distributed import batch_arguments
from pipeline_lib.training.optimizers import optimizer_spec
from pipeline_lib.training.progress import no_transformers_bars, use_loss_bar


# Prefixes of the values our trainers log beside the loss (trainers.ObjectiveTrainer.record).
OBJECTIVE_LOGS = ("rewards", "logps", "ift_lambda", "figa_positive_tokens", "figa_negative_candidates")


@dataclass(frozen=True)
class Objective:
    """A training objective: its trainer class, that trainer's arguments class, and argument values of its own."""

    name: str
    trainer_cls: Callable[..., Trainer]
    args_cls: type[TrainingArguments]
    args: Mapping[str, Any] = field(default_factory=dict)
    collator: Callable | None = None  # None: the trainer's own
    # Runs on the loaded model before training (e.g. the reference log-probabilities).
    prepare: Callable[[PreTrainedModel, Dataset, Any], Dataset] | None = None


@no_transformers_bars()
def fine_tune(
    objective: Objective,
    model_path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    seed: int,
    dtype: str,
    work_dir: str | Path | None,
    progress: bool,
    callbacks: Sequence[TrainerCallback] = (),
    tokens_per_epoch: int | None = None,
) -> dict[str, Any]:
    """Train ``model_path`` on a ``dataset`` made with its ``tokenizer``; save it (merged, if LoRA) to ``out_dir``.

    ``out_dir`` appears (or is replaced) in one rename once the model is fully
    written; an existing empty ``out_dir`` is filled in place (see ``_save``).
    ``train.max_tokens`` sets the epochs to the budget over ``tokens_per_epoch``.
    Returns the run's metrics; the caller adds what it knows about the data.
    """
    # numpy (seeded by the Trainer) takes only 32-bit seeds; callers may pass any derived int.
    seed %= 2**31
    epochs = config.epochs
    if config.max_tokens is not None and tokens_per_epoch:
        epochs = config.max_tokens / tokens_per_epoch
    model = load_causal_lm(model_path, dtype)
    align_pad_id(model, tokenizer)
    if objective.prepare is not None:
        dataset = objective.prepare(model, dataset, objective.collator)
    if config.mode == "lora":
        model = _with_lora(model, config.lora, seed)
    optimizer = optimizer_spec(config, model, seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    timer = OptimizerTimer()

    with _scratch(work_dir) as scratch:
        arguments = {**_common_arguments(config, seed, scratch), "num_train_epochs": epochs, **objective.args}
        trainer = objective.trainer_cls(
            model=model,
            args=objective.args_cls(**arguments),
            train_dataset=dataset,
            processing_class=tokenizer,
            optimizer_cls_and_kwargs=optimizer,
            callbacks=[*callbacks, timer, StopOnInterrupt()],
            **({"data_collator": objective.collator} if objective.collator is not None else {}),
        )
        use_loss_bar(trainer, objective.name, progress)
        output = trainer.train()

    _save_trained(trainer, tokenizer, Path(out_dir), config)

    history = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
    # The objective's own logged values (DPO rewards, IFT's λ...), as of the last step.
    logged = [e for e in trainer.state.log_history if "loss" in e]
    objective_metrics = {k: v for k, v in (logged[-1] if logged else {}).items() if k.split("/")[0] in OBJECTIVE_LOGS}
    runtime = output.metrics["train_runtime"]
    seen = trainer.state.num_input_tokens_seen
    return {
        "objective": objective.name,
        "mode": config.mode,
        "lora_merged": config.mode == "lora",
        "trainable_params": trainable,
        "train_loss": output.training_loss,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_history": history,
        "steps": trainer.state.global_step,
        "epochs": round(epochs, 4),
        "optimizer": config.optimizer,
        "optimizer_step_ms": timer.mean_ms(),
        "runtime_s": round(runtime, 3),
        "seconds_per_epoch": round(runtime / epochs, 3),
        "trained_tokens": seen,
        "tokens_per_s": round(seen / runtime, 1) if runtime > 0 else None,
        "objective_metrics": objective_metrics,
    }


class OptimizerTimer(TrainerCallback):
    """Wall time of each optimizer step, so the merging optimizers' extra cost over AdamW is on record."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_pre_optimizer_step(self, args, state, control, **kwargs) -> None:
        self._started = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs) -> None:
        self.seconds.append(time.perf_counter() - self._started)

    def mean_ms(self) -> float | None:
        return round(1000 * sum(self.seconds) / len(self.seconds), 3) if self.seconds else None


class StopOnInterrupt(TrainerCallback):
    """Ends training after the step in which a ctrl-C came, even one whose KeyboardInterrupt was swallowed."""

    def on_step_end(self, args, state, control, **kwargs) -> None:
        interrupts.check()


def _common_arguments(config: TrainConfig, seed: int, scratch: Path) -> dict[str, Any]:
    return {
        "output_dir": str(scratch),
        "num_train_epochs": config.epochs,
        # train.batch_size is the global batch, in one process or several (whose group, gloo on CPUs,
        # the launched worker has formed already).
        **batch_arguments(config.batch_size),
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr,
        "weight_decay": config.weight_decay,
        # transformers 5 reads a warmup_steps below 1 as a fraction of all steps.
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": "linear",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        # Parameters stay in the dtype they were loaded in: on the CPUs here bf16
        # autocast is slower than fp32, and fp16 needs a GPU.
        "bf16": False,
        "fp16": False,
        # TRL turns it on by default; at these sizes memory is plentiful and the recompute costs ~20 %.
        # (transformers 5 renamed it; the old name warns.)
        "activation_checkpointing": False,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
        # Batches of similar lengths waste less compute on padding.
        "train_sampling_strategy": "group_by_length",
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": True,
    }


def _with_lora(model: PreTrainedModel, lora: LoraConfig, seed: int) -> PreTrainedModel:
    set_seed(seed)  # the adapter's initial weights are random
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads a property transformers 5 renamed; the warning is theirs, not the user's.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            return get_peft_model(model, peft_config)
    except ValueError as error:
        raise UserError(f"train.lora.target_modules {lora.target_modules}: {error}") from None


@contextmanager
def _scratch(work_dir: str | Path | None) -> Iterator[Path]:
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="alignflow-train-") as tmp:
        yield Path(tmp)


def _save_trained(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, out_dir: Path, config: TrainConfig) -> None:
    """Save the trained model from the main process only; with several processes the others wait for it."""
    accelerator = trainer.accelerator
    # FSDP and DeepSpeed shard the weights: gathering them whole takes every process.
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state_dict = accelerator.get_state_dict(trainer.model) if sharded else None
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(trainer.model)
        if config.mode == "lora":
            trained = trained.merge_and_unload()
        _save(trained, tokenizer, out_dir, state_dict)
    accelerator.wait_for_everyone()


def _save(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, state_dict: dict[str, Any] | None = None
) -> None:
    """Write the model folder atomically, unless ``out_dir`` is an empty folder the caller made.

    An empty existing folder is taken to be the caller's own scratch folder
    (a stage's temporary folder, published by its own rename), so it is filled
    in place; wrapping it in a second rename would only leave lock files about.
    """
    # Generation pads on the left; a saved right-padding default would trip any loader that does not set it.
    tokenizer.padding_side = "left"
    caller_scratch = out_dir.is_dir() and not any(out_dir.iterdir())
    with nullcontext(out_dir) if caller_scratch else atomic_dir(out_dir) as folder:
        model.save_pretrained(folder, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(folder)
