"""Seeded sampling inside the vLLM server: a request's draws depend only on its own seed.

vLLM's per-request ``seed`` kills its CPU engine ("CPU Generator does not use offset"), and a
server-wide ``--seed`` makes a sampled answer depend on which server drew it and on the requests it
was batched with. SEFT's policy samples then differed between one server and two replicas, and so did
every later round.

A request that carries ``vllm_xargs: {"alignflow_seed": S}`` has each of its tokens drawn here by the
Gumbel-max trick: the token at output position ``t`` is ``argmax(logits / T + g)``, where ``g`` is
Gumbel noise from a generator seeded by ``(S, t)``, over the top-p nucleus. That is an exact draw from
the tempered, nucleus-truncated distribution. The row's logits are then set to that one token (0) and
-inf elsewhere, so vLLM's own sampler, which runs after this processor, can only pick it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

SEED_ARG = "alignflow_seed"
# Below this temperature vLLM decodes greedily; so does a request here.
GREEDY_BELOW = 1e-5
# (seed, position) -> one generator seed; unique for every position below this.
POSITIONS = 1_000_003


class SeededSampling(LogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        seed = (sampling_params.extra_args or {}).get(SEED_ARG)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"vllm_xargs.{SEED_ARG} must be a non-negative integer, got {seed!r}")
        if seed is not None and (sampling_params.top_k not in (None, 0, -1) or sampling_params.min_p):
            raise ValueError(f"vllm_xargs.{SEED_ARG} draws from temperature and top_p only; top_k and min_p are not applied")

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        # batch row -> (seed, temperature, top_p, the request's output token ids, grown by vLLM in place)
        self.rows: dict[int, tuple[int, float, float, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        # It decides the token, so it must run before vLLM's greedy and random sampling.
        return False

    @staticmethod
    def _row(params: SamplingParams, _prompt_ids, output_ids: list[int]):
        seed = (params.extra_args or {}).get(SEED_ARG)
        if seed is None or params.temperature < GREEDY_BELOW:
            return None
        return seed, params.temperature, params.top_p, output_ids

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._row)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        # The position is the number of tokens already generated: a prefill chunk whose token is
        # thrown away draws for the same position as the step that keeps it.
        seeds, temperatures, top_ps = zip(*((seed * POSITIONS + len(out), t, p) for seed, t, p, out in self.rows.values()))
        index = torch.tensor(list(self.rows), device=logits.device)
        tokens = draw(logits[index], seeds, temperatures, top_ps)
        logits[index] = float("-inf")
        logits[index, tokens] = 0.0
        return logits


def draw(logits: torch.Tensor, seeds: Sequence[int], temperatures: Sequence[float], top_ps: Sequence[float]) -> torch.Tensor:
    """One token per row from softmax(row / temperature) cut to its top-p nucleus, by the Gumbel-max trick."""
    device = logits.device
    scaled = logits.float() / torch.tensor(temperatures, device=device).unsqueeze(1)
    top_p = torch.tensor(top_ps, device=device)
    cut = top_p < 1.0
    if cut.any():
        probs = scaled[cut].softmax(-1)
        scaled[cut] = scaled[cut].masked_fill(probs < nucleus_floor(probs, top_p[cut]), float("-inf"))
    noise = torch.empty_like(scaled)
    for row, seed in enumerate(seeds):
        torch.rand(scaled.shape[1], generator=torch.Generator(device=device).manual_seed(seed), device=device, out=noise[row])
    gumbel = -torch.log(-torch.log(noise.clamp_(min=torch.finfo(noise.dtype).tiny)))
    return (scaled + gumbel).argmax(-1)


def nucleus_floor(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per row, the probability of the least likely token in its nucleus: the most likely tokens, in
    order, until they hold ``top_p`` of the mass (at least one). Found among the top 256, then the top
    4,096, then all: sorting the whole vocabulary for every row costs more than the model's step."""
    floor = torch.empty(len(probs), device=probs.device)
    left = torch.arange(len(probs), device=probs.device)
    for k in (256, 4096, probs.shape[1]):
        values, _ = probs[left].topk(min(k, probs.shape[1]), dim=-1)
        held = values.cumsum(-1)
        done = (held[:, -1] >= top_p[left]) | (values.shape[1] == probs.shape[1])
        kept = ((held - values)[done] < top_p[left][done].unsqueeze(1)).sum(-1)
        floor[left[done]] = values[done].gather(1, (kept - 1).unsqueeze(1)).squeeze(1)
        left = left[~done]
        if not len(left):
            break
    return floor.unsqueeze(1)
