"""Where a completion ends, defined once for every backend: the EOS ids and the stop strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_END_TOKEN = "<|im_end|>"


def stop_token_ids(tokenizer: Any, configured: int | list[int] | None) -> list[int]:
    """EOS ids: the tokenizer's, the ChatML end-of-turn token, and any the checkpoint's generation config lists."""
    ids = {tokenizer.eos_token_id}
    if CHAT_END_TOKEN in tokenizer.get_vocab():
        ids.add(tokenizer.convert_tokens_to_ids(CHAT_END_TOKEN))
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def configured_eos(model_path: str | Path) -> int | list[int] | None:
    """The EOS id(s) in a model folder's generation config, without loading the weights."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS is all there is
        return None


def first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None
