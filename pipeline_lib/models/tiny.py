"""tiny-llama: a random ~1M-parameter Llama with SmolLM2's tokenizer, for fast tests.

Sharing the real tokenizer (vocabulary 49152, ChatML template, pad/eos ids)
means every code path that tokenizes, pads, masks or applies the chat template
is exercised exactly as with the real model, at a fraction of the cost. The
embedding matrix dominates the size, so it is tied to the output head and the
hidden size is tiny.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from pipeline_lib.models.loading import count_parameters
from pipeline_lib.models.smollm2 import smollm2_tokenizer
from pipeline_lib.store import atomic_dir, write_manifest

ALIAS = "tiny-llama"
RECIPE = 3


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    # Two query heads sharing one key/value head keeps grouped-query attention in play, as in SmolLM2.
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=20,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        # vLLM's CPU attention kernels take only some head sizes (32 is the
        # smallest); 20 / 2 heads would give 10 and the engine would refuse it.
        head_dim=32,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # With the usual 0.02 the residual stream is dominated by the last
        # token's embedding and greedy output ignores the context; tests of
        # padding, masking and EOS handling would then pass vacuously.
        initializer_range=0.3,
    )


def build_tiny_llama(out_dir: Path, seed: int = 0) -> Path:
    """Build tiny-llama at ``out_dir`` (atomically); the same seed gives identical weights."""
    started = time.perf_counter()
    tokenizer = smollm2_tokenizer()
    config = tiny_llama_config(tokenizer)
    # A private RNG stream: building a test model must not shift the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            model=ALIAS,
            recipe=RECIPE,
            seed=seed,
            parameters=count_parameters(model),
            dtype="float32",
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 2),
        )
    return Path(out_dir)
