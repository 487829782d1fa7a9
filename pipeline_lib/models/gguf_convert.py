"""GGUF file -> HF folder (fp32 safetensors + tokenizer), via transformers' GGUF loader.

transformers dequantizes every tensor and undoes llama.cpp's q/k row
permutation on load; what it will not do is save a model that still carries
the GGUF "quantization" marker, so that marker is dropped before saving.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pipeline_lib.core.errors import UserError
from pipeline_lib.models.loading import align_pad_id, count_parameters, use_distinct_pad
from pipeline_lib.store import atomic_dir, digest_file, write_manifest


def load_gguf_tokenizer(gguf_path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer (vocabulary, merges, chat template) stored in a GGUF file, with a distinct pad."""
    gguf_path = _existing_gguf(gguf_path)
    # AutoTokenizer would parse the whole GGUF metadata once more just to pick this same class
    # (seconds for a 49k vocabulary); the fast backend reads only the tokenizer keys.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return use_distinct_pad(tokenizer)


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF checkpoint into an HF folder at ``out_dir``, which appears only when complete."""
    with atomic_dir(Path(out_dir)) as tmp:
        fields = convert_gguf_into(gguf_path, tmp)
        write_manifest(tmp, **fields)
    return Path(out_dir)


def convert_gguf_into(gguf_path: Path, folder: Path) -> dict[str, Any]:
    """Write the converted model into an existing (temporary) folder; return the manifest fields."""
    gguf_path = _existing_gguf(gguf_path)
    started = time.perf_counter()
    try:
        tokenizer = load_gguf_tokenizer(gguf_path)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (ValueError, OSError, KeyError) as error:
        # A damaged file or an architecture transformers cannot read: the user has to pick another file.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot convert GGUF file {gguf_path}: {reason}") from error
    model.hf_quantizer.remove_quantization_config(model)
    align_pad_id(model, tokenizer)
    # The GGUF tokenizer comes without a length limit; truncation needs the model's.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stat = gguf_path.stat()
    return {
        "source": str(gguf_path),
        "source_bytes": stat.st_size,
        "source_sha256": digest_file(gguf_path),
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "dtype": "float32",
        "pad_token": tokenizer.pad_token,
        "transformers_version": transformers.__version__,
        "convert_seconds": round(time.perf_counter() - started, 2),
    }


def _existing_gguf(gguf_path: Path) -> Path:
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} does not exist")
    with open(gguf_path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UserError(f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    return gguf_path
