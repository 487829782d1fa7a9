"""``train.objective`` -> the rows it reads, how they are tokenised, and the trainer that trains on them.

| objective | row fields | trainer |
|---|---|---|
| sft  | prompt, completion | TRL's SFTTrainer (per-token mean NLL) |
| ift  | prompt, completion | ``IFTTrainer`` |
| dpo  | prompt, chosen, rejected | ``PreferenceTrainer`` |
| spin | prompt, chosen (the real answer), rejected (the policy's sample) | ``PreferenceTrainer`` |
| figa | prompt, revised, original | ``FigaTrainer`` |
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments

from pipeline_lib.models.loading import load_tokenizer
from pipeline_lib.training.collate import PairCollator, SequenceCollator
from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.figa_data import token_kinds
from pipeline_lib.training.logits import response_logits
from pipeline_lib.training.losses import IGNORE_INDEX, sequence_logps
from pipeline_lib.training.runner import Objective, fine_tune
from pipeline_lib.training.sft import sft_objective
from pipeline_lib.training.sft_data import tokenize_sft_rows
from pipeline_lib.training.trainers import FigaTrainer, IFTTrainer, PreferenceTrainer

FIELDS = {
    "sft": ("completion",),
    "ift": ("completion",),
    "dpo": ("chosen", "rejected"),
    "spin": ("chosen", "rejected"),
    "figa": ("revised", "original"),
}
# Our trainers read columns the model's forward does not name.
_OWN_COLUMNS = {"remove_unused_columns": False}
REF_BATCH = 8  # rows per no-grad forward when precomputing reference log-probabilities


def build_objective(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> Objective:
    name, pad = config.objective, tokenizer.pad_token_id
    if name == "sft":
        return sft_objective(config)
    if name == "ift":
        trainer = functools.partial(IFTTrainer, ift=config.ift)
        return Objective(name, trainer, TrainingArguments, _OWN_COLUMNS, collator=SequenceCollator(pad))
    if name == "figa":
        trainer = functools.partial(FigaTrainer, figa=config.figa)
        collator = PairCollator(pad, "revised", "original", interleave=True, extra={"token_kind": 0})
        return Objective(name, trainer, TrainingArguments, _OWN_COLUMNS, collator=collator)
    trainer = functools.partial(PreferenceTrainer, preference=config.preference)
    collator = PairCollator(pad, "chosen", "rejected", interleave=False, floats=("ref_logps",))
    return Objective(name, trainer, TrainingArguments, _OWN_COLUMNS, collator=collator, prepare=add_reference_logps)


def add_reference_logps(model: PreTrainedModel, dataset: Dataset, collator: PairCollator) -> Dataset:
    """``chosen_ref_logps`` / ``rejected_ref_logps``: the starting model's sequence log-probabilities.

    The reference is the model before any update, so one no-grad pass now
    equals running a frozen copy beside the policy for the whole run.
    """
    was_training = model.training
    model.eval()
    chosen: list[float] = []
    rejected: list[float] = []
    plain = PairCollator(collator.pad_id, "chosen", "rejected", interleave=False)
    with torch.no_grad():
        for start in range(0, len(dataset), REF_BATCH):
            batch = plain(dataset.select(range(start, min(start + REF_BATCH, len(dataset)))))
            batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
            logits, spans = response_logits(
                model, batch["labels"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            logps = sequence_logps(logits, spans.take(batch["labels"], IGNORE_INDEX)).tolist()
            half = len(logps) // 2
            chosen += logps[:half]
            rejected += logps[half:]
    model.train(was_training)
    return dataset.add_column("chosen_ref_logps", chosen).add_column("rejected_ref_logps", rejected)


def add_token_kinds(dataset: Dataset, eos_id: int | None) -> Dataset:
    """``revised_token_kind`` / ``original_token_kind``: FIGA's edit-script sets (``figa_data.token_kinds``)."""
    pairs = [token_kinds(o, r, eos_id) for o, r in zip(dataset["original_labels"], dataset["revised_labels"], strict=True)]
    dataset = dataset.add_column("revised_token_kind", [revised for revised, _ in pairs])
    return dataset.add_column("original_token_kind", [original for _, original in pairs])


def train_model(
    model_path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    config: TrainConfig,
    seed: int = 0,
    dtype: str = "float32",
    work_dir: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Fine-tune ``model_path`` on ``rows`` with ``config.objective`` into ``out_dir`` (see the module table).

    Full or LoRA (merged into the saved weights) per ``config.mode``. ``out_dir``
    becomes a complete HF model folder, written beside it and renamed into
    place, or written straight into it when it is an existing empty folder (a
    caller's scratch folder inside an atomic stage). ``work_dir`` holds the
    trainer's scratch files (a removed temp folder by default). Returns
    JSON-serialisable metrics: losses, steps, token counts, throughput, and how
    many rows ``config.max_length`` truncated or left without completion tokens.
    """
    tokenizer = load_tokenizer(model_path, padding_side="right")
    fields = FIELDS[config.objective]
    data = tokenize_sft_rows(rows, tokenizer, config.max_length, fields, ensure_eos=config.objective == "figa")
    dataset = add_token_kinds(data.dataset, tokenizer.eos_token_id) if config.objective == "figa" else data.dataset
    metrics = fine_tune(
        build_objective(config, tokenizer),
        model_path,
        tokenizer,
        dataset,
        out_dir,
        config,
        seed=seed,
        dtype=dtype,
        work_dir=work_dir,
        progress=progress,
        callbacks=callbacks,
        tokens_per_epoch=data.total_tokens,
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


def train_sft(
    model_path: str | Path, rows: Sequence[Mapping[str, Any]], out_dir: str | Path, config: TrainConfig, **options: Any
) -> dict[str, Any]:
    """``train_model`` with the SFT objective, whatever ``config.objective`` says."""
    return train_model(model_path, rows, out_dir, config.model_copy(update={"objective": "sft"}), **options)
