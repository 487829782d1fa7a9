"""Sampling with HF transformers ``generate`` in this process (the fallback backend).

Batches are left-padded with an attention mask built from prompt lengths, so a
prompt's greedy output does not depend on which other prompts share its batch.
Scoring candidates (``choice_logprobs``) pads the same way, with positions
counted from each row's first real token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, StaticCache
from transformers.cache_utils import StaticLayer

from pipeline_lib.core import progress
from pipeline_lib.models import load_causal_lm, load_tokenizer
from pipeline_lib.sampling.base import (
    FinishReason,
    Sample,
    Sampler,
    SamplingParams,
    derive_seed,
    encode_choices,
    encode_prompts,
)
from pipeline_lib.sampling.stops import first_stop, stop_token_ids


# A batch whose longest prompt is at most this many times its shortest is prefilled padded, in one pass.
PREFILL_SLACK = 1.2


class HFSampler(Sampler):
    name = "hf"

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "float32",
        batch_size: int = 32,
        progress: bool = True,
        device: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model_path)
        self.batch_size = batch_size
        self.progress = progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = load_tokenizer(model_path, padding_side="left")
        model = load_causal_lm(model_path, dtype).to(self.device)
        self.stop_token_ids = stop_token_ids(self.tokenizer, model.generation_config.eos_token_id)
        self.pad_token_id = _pad_token_id(self.tokenizer, self.stop_token_ids)
        # Sampling must be defined by SamplingParams alone, identically for
        # every backend: drop checkpoint defaults such as top_k or a
        # repetition penalty that generate() would otherwise apply silently.
        model.generation_config = GenerationConfig()
        self._model: PreTrainedModel | None = model

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]:
        if self._model is None:
            raise RuntimeError("this HFSampler is closed")
        if not prompts:
            return []
        encoded = encode_prompts(self.tokenizer, prompts)
        # Greedy samples of one prompt are identical: generate one and copy it.
        copies = 1 if params.greedy else params.n
        rows = [(p, s) for p in range(len(prompts)) for s in range(copies)]
        # Longest first: batches of similar length waste less on padding, and
        # an out-of-memory error shows up on the first batch, not the last.
        rows.sort(key=lambda row: (-len(encoded[row[0]]), row))
        results: dict[tuple[int, int], Sample] = {}
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            new_tokens = self._generate_batch([encoded[p] for p, _ in batch], params, start)
            for (p, s), tokens in zip(batch, new_tokens, strict=True):
                results[p, s] = self._to_sample(p, s, len(encoded[p]), tokens, params)
            if self.progress:
                progress.advance(len(batch) * (params.n if params.greedy else 1))
        return [
            dataclasses.replace(results[p, 0 if params.greedy else s], sample_index=s)
            for p in range(len(prompts))
            for s in range(params.n)
        ]

    def choice_logprobs(self, prompts: list[str], candidates: Sequence[str]) -> list[list[float]]:
        if self._model is None:
            raise RuntimeError("this HFSampler is closed")
        encoded, choices = encode_choices(self.tokenizer, prompts, candidates)
        if choices and all(len(c) == 1 for c in choices):
            return self._next_token_logprobs(encoded, [c[0] for c in choices])
        scores = [[0.0] * len(choices) for _ in encoded]
        rows = [(p, c) for p in range(len(encoded)) for c in range(len(choices))]
        # Longest first, as in generate: less padding, and out of memory on the first batch.
        rows.sort(key=lambda row: (-len(encoded[row[0]]) - len(choices[row[1]]), row))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            totals = self._score_batch([encoded[p] for p, _ in batch], [choices[c] for _, c in batch])
            for (p, c), total in zip(batch, totals, strict=True):
                scores[p][c] = total
        return scores

    def close(self) -> None:
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _left_padded(self, token_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows padded on the left to one width, with the mask that marks their real tokens."""
        width = max(len(t) for t in token_lists)
        input_ids = torch.full((len(token_lists), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            input_ids[row, width - len(tokens) :] = torch.tensor(tokens)
            attention_mask[row, width - len(tokens) :] = 1
        return input_ids, attention_mask

    def _generate_batch(self, token_lists: list[list[int]], params: SamplingParams, start: int) -> list[list[int]]:
        input_ids, attention_mask = self._left_padded(token_lists)
        width = input_ids.shape[1]
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            temperature=None if params.greedy else params.temperature,
            top_p=None if params.greedy else params.top_p,
            top_k=None if params.greedy else 0,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            stop_strings=list(params.stop) or None,
        )
        # fork_rng keeps the caller's global RNG untouched by our reseeding.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            cache = self._cache(token_lists, params.max_new_tokens)
            torch.manual_seed(derive_seed(params.seed, "batch", start))
            output = self._model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                past_key_values=cache,
                generation_config=config,
                tokenizer=self.tokenizer if params.stop else None,
            )
        return output[:, width:].tolist()

    def _cache(self, token_lists: list[list[int]], max_new_tokens: int) -> StaticCache | None:
        """A static KV cache for the batch (None for a model whose layers are not all full attention), holding
        each row's prompt but its last token when the rows differ in length.

        Static: a growing cache is copied whole at every step, which on MT-Bench's widest batch (one prompt of
        402 tokens) doubles the step time; a static one is written in place. Prefilled: a padded batch
        computes every row to its longest prompt (12,864 positions there for 5,247 real tokens), so rows
        (longest first, as the batch is) are prefilled in groups of about one length and padded only in the
        cache, where padding keys are masked: each row's output is what it would be alone.
        """
        lengths = [len(t) for t in token_lists]
        cache = StaticCache(config=self._model.config, max_cache_len=max(lengths) + max_new_tokens)
        if any(type(layer) is not StaticLayer for layer in cache.layers):
            return None
        if min(lengths) < 2 or max(lengths) <= PREFILL_SLACK * min(lengths):
            return cache  # generate prefills rows of about one length in one padded pass
        width = max(lengths) - 1
        keys: list[list[torch.Tensor]] = [[] for _ in cache.layers]
        values: list[list[torch.Tensor]] = [[] for _ in cache.layers]
        for group in _length_groups(lengths):
            input_ids, attention_mask = self._left_padded([token_lists[r][:-1] for r in group])
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as in _score_batch
            prefilled = self._model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device), logits_to_keep=1, use_cache=True,
            ).past_key_values  # fmt: skip
            for index, layer in enumerate(prefilled.layers):
                pad = (0, 0, width - layer.keys.shape[-2], 0)
                keys[index].append(torch.nn.functional.pad(layer.keys, pad))
                values[index].append(torch.nn.functional.pad(layer.values, pad))
        for index in range(len(cache.layers)):
            cache.update(torch.cat(keys[index]), torch.cat(values[index]), index)
        return cache

    def _next_token_logprobs(self, encoded: list[list[int]], ids: list[int]) -> list[list[float]]:
        """Every candidate is one token (a judge's labels): one pass per prompt reads them all from its
        next-token distribution, instead of one pass per candidate."""
        scores: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda p: (-len(encoded[p]), p))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            input_ids, attention_mask = self._left_padded([encoded[p] for p in batch])
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as in _score_batch
            with torch.inference_mode():
                logits = self._model(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    position_ids=position_ids.to(self.device), logits_to_keep=1, use_cache=False,
                ).logits  # fmt: skip
                rows = logits[:, -1].float().log_softmax(-1)[:, ids].double().tolist()
            for p, row in zip(batch, rows, strict=True):
                scores[p] = row
        return scores

    def _score_batch(self, prompt_lists: list[list[int]], choice_lists: list[list[int]]) -> list[float]:
        """Summed log-probabilities of each row's candidate ids after its prompt ids, by teacher forcing.

        Left padding puts every candidate at the end of its row, so only the
        logits of the last few positions are computed: a vocabulary-wide row
        for every prompt token would be most of the memory of a long prompt.
        """
        sequences = [prompt + choice for prompt, choice in zip(prompt_lists, choice_lists, strict=True)]
        longest = max(len(c) for c in choice_lists)
        input_ids, attention_mask = self._left_padded(sequences)
        width = input_ids.shape[1]
        # A plain forward pass numbers positions 0..width-1 whatever the mask
        # says; generate() counts them from each row's first real token, and
        # so must we: a model with absolute position embeddings would
        # otherwise score a row differently in a wider batch (a rotary one,
        # which sees only relative positions, just in rounding).
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self._model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device),
                logits_to_keep=longest + 1,
                use_cache=False,
            ).logits
            # The logits at position t predict token t + 1: the last `longest`
            # targets are predicted by all but the last kept position.
            logprobs = logits[:, :-1].float().log_softmax(-1)
            targets = input_ids[:, width - longest :].to(self.device)
            picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            lengths = torch.tensor([len(c) for c in choice_lists], device=self.device)
            in_choice = torch.arange(longest, device=self.device) >= (longest - lengths).unsqueeze(-1)
            # where, not a product: a padding position's value is never read, even if it is not finite.
            totals = torch.where(in_choice, picked, 0.0).double().sum(-1)
        return totals.tolist()

    def _to_sample(
        self, prompt_index: int, sample_index: int, prompt_tokens: int, tokens: list[int], params: SamplingParams
    ) -> Sample:
        """Turn generated ids into a Sample; ids after a finished sequence's end are padding."""
        eos_at = next((i for i, t in enumerate(tokens) if t in self.stop_token_ids), None)
        content = tokens if eos_at is None else tokens[:eos_at]
        text = self._decode(content)
        cut = first_stop(text, params.stop)
        reason: FinishReason
        if cut is not None:
            text, reason = text[:cut], "stop"
            count = self._tokens_until_stop(content, params.stop)
        elif eos_at is not None:
            count, reason = eos_at + 1, "stop"
        else:
            count, reason = len(tokens), "length"
        return Sample(prompt_index, sample_index, text, prompt_tokens, count, reason)

    def _tokens_until_stop(self, tokens: list[int], stop: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text contains a stop string: where generation stopped."""
        low, high = 1, len(tokens)
        while low < high:
            mid = (low + high) // 2
            if first_stop(self._decode(tokens[:mid]), stop) is None:
                low = mid + 1
            else:
                high = mid
        return low

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def _length_groups(lengths: list[int]) -> list[list[int]]:
    """Consecutive rows (longest first) in groups whose longest is at most PREFILL_SLACK times their shortest."""
    groups: list[list[int]] = []
    for row, length in enumerate(lengths):
        if groups and lengths[groups[-1][0]] <= PREFILL_SLACK * length:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _pad_token_id(tokenizer: Any, stop_token_ids: list[int]) -> int:
    """A pad id that is not an EOS id, so padding can never be read as a real end of sequence.

    Masks are built from lengths, so any id works for the prompt side; a
    distinct one keeps finished rows' filler apart from genuine EOS tokens.
    """
    candidates = [tokenizer.pad_token_id, tokenizer.unk_token_id, *tokenizer.all_special_ids]
    distinct = [i for i in candidates if i is not None and i not in stop_token_ids]
    # Without a distinct one any id is still correct: a sequence ends at its
    # first EOS, and filler only ever follows an end.
    return distinct[0] if distinct else 0
