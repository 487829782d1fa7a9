"""Loading a model folder the same way everywhere: samplers, trainers, evaluators.

The one thing worth centralising is the pad token: SmolLM2 ships with
pad = eos, which makes a padded eos indistinguishable from padding when masks
or labels are built from token ids. We pick a distinct token the vocabulary
already has, so nothing needs resizing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipeline_lib.core.errors import UserError
from pipeline_lib.models.integrity import damaged_file

# Tokens that mean "nothing here" in common vocabularies, best first.
_PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<unk>")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def use_distinct_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token different from eos when its vocabulary has one."""
    eos_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos_id:
        return tokenizer
    vocab = tokenizer.get_vocab()
    for candidate in _PAD_CANDIDATES:
        token_id = vocab.get(candidate)
        if token_id is not None and token_id != eos_id:
            tokenizer.pad_token = candidate
            return tokenizer
    if tokenizer.pad_token_id is None:
        # No spare token: padding with eos still works when masks come from lengths.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def align_pad_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the model's config and generation config agree with the tokenizer's pad token."""
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(
    path: str | Path, padding_side: Literal["left", "right"] = "left"
) -> PreTrainedTokenizerBase:
    """Tokenizer of a model folder; left padding for generation, right for training."""
    if padding_side not in ("left", "right"):
        raise UserError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    with _naming_damaged_files(path):
        tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side=padding_side)
    return use_distinct_pad(tokenizer)


def load_causal_lm(path: str | Path, dtype: str = "float32") -> PreTrainedModel:
    """Causal LM of a model folder in the given dtype, in eval mode."""
    if dtype not in _DTYPES:
        raise UserError(f"model dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    with _naming_damaged_files(path):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype])
    return model.eval()


@contextmanager
def _naming_damaged_files(folder: str | Path) -> Iterator[None]:
    """Turn a load failure that a damaged file explains into a ``UserError`` naming the file.

    transformers' own errors for a cut-off file (a safetensors header error, a
    JSON decode error) name no file; any other failure is left as it is.
    """
    try:
        yield
    except Exception as error:
        problem = damaged_file(Path(folder))
        if problem is None:
            raise
        raise UserError(problem) from error


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters counted once even when tied (embeddings shared with the head)."""
    return sum(p.numel() for p in model.parameters())


def context_length(path: str | Path) -> int | None:
    """The longest sequence the model's config says it takes, if it says."""
    config = json.loads((Path(path) / "config.json").read_text())
    return config.get("max_position_embeddings") or config.get("n_positions")
