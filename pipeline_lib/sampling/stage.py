"""The sampling stage every flow uses: chat prompts in, one Parquet of samples out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline_lib.models import load_tokenizer
from pipeline_lib.sampling import SamplingParams, make_sampler, render_chat, sample_to_parquet
from pipeline_lib.sampling.base import Message
from pipeline_lib.sampling.config import SamplerConfig


def sample_chat(
    prompt_ids: list[str],
    prompts: Sequence[str | Sequence[Message]],
    model_path: Path,
    dtype: str,
    sampler_config: SamplerConfig,
    params: SamplingParams,
    out_file: Path,
    shard_dir: Path,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Render each prompt with the model's chat template and sample it; returns the sampling stats."""
    started = time.perf_counter()
    with make_sampler(sampler_config, model_path, dtype=dtype, batch_size=batch_size) as sampler:
        # Loading the model or starting (or reusing) a server: what this stage paid before its first token.
        ready = time.perf_counter() - started
        # The sampler's own tokenizer (the model's, left-padded) where it has one: loading it again costs
        # 0.15-0.3 s of CPU, at every sampling stage.
        tokenizer = getattr(sampler, "tokenizer", None) or load_tokenizer(model_path)
        rendered = [render_chat(tokenizer, prompt) for prompt in prompts]
        return {**sample_to_parquet(sampler, prompt_ids, rendered, params, out_file, shard_dir), "startup_seconds": round(ready, 2)}
