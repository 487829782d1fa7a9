"""The backend-neutral sampling interface: parameters, result rows, the Sampler protocol.

Every generation in alignflow (policy samples, reviser outputs, evaluation
answers) goes through a ``Sampler``. Prompts reach it already rendered, so an
HF model in this process and a vLLM server elsewhere see the same text and
their outputs are comparable row for row.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.config import SamplerConfig

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample; ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 128
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A list passed for `stop` would make the params unhashable and their
        # JSON description differ from the tuple's; normalise once here.
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens} and {self.n}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_config(cls, config: SamplerConfig, **overrides: Any) -> SamplingParams:
        values = {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "n": config.n,
            "seed": config.seed,
        }
        return cls(**{**values, **overrides})

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, used to tell whether saved samples were made with these params."""
        return {**dataclasses.asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class Sample:
    """One completion: sample ``sample_index`` of prompt ``prompt_index`` in the call's prompt list."""

    prompt_index: int
    sample_index: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class Sampler(Protocol):
    """A text generator over already-rendered prompts.

    ``name`` says which backend this is (for logs and for telling saved
    samples apart); ``model_id`` identifies the weights it serves.
    ``generate`` returns ``n`` samples per prompt ordered by
    (prompt_index, sample_index). Backends subclass this protocol to inherit
    the context-manager methods.
    """

    name: str
    model_id: str

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]: ...

    def choice_logprobs(self, prompts: list[str], candidates: Sequence[str]) -> list[list[float]]:
        """For each already-rendered prompt, the total log-probability of each candidate continuation.

        Row ``i`` holds, in the order of ``candidates``, the natural-log
        probability of the candidate's tokens following prompt ``i``, summed
        over those tokens: a constrained choice (a judge picking a label)
        without sampling or parsing text. Each candidate is tokenized on its
        own, with no special tokens, and its ids are appended to the prompt's
        ids (see ``encode_choices``), so a candidate is scored as those exact
        ids, not as whatever tokens the prompt text plus the candidate text
        would merge into; the AlpacaEval judge's labels "m" and "M", say, are
        one token each. A candidate with no tokens is a ``ValueError``.
        """
        # A body, unlike generate's: a backend (or test double) that subclasses
        # this protocol without scoring must fail loudly, not return None.
        raise NotImplementedError(f"the {self.name!r} sampler cannot score candidates")

    def close(self) -> None: ...

    def __enter__(self) -> Sampler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one piece of work (a batch, a shard) that depends only on the run seed and its position.

    Seeding each piece this way makes its samples independent of what ran
    before it, so a resumed run reproduces the pieces it regenerates.
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


Message = Mapping[str, str]


def encode_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompts, as every backend feeds them to its model.

    Rendered prompts already hold every special token their template wants,
    so the tokenizer adds none.
    """
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompts {empty[:5]} are empty; every prompt needs at least one token")
    return encoded


def encode_choices(
    tokenizer: Any, prompts: list[str], candidates: Sequence[str]
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of rendered prompts and of candidate continuations, as every backend scores them.

    Candidates are tokenized on their own: tokenizing prompt and candidate as
    one text could merge the candidate's first token with the prompt's last,
    and the candidates of one choice would then not even be scored at the
    same position.
    """
    if isinstance(candidates, str):
        # A string is a Sequence[str] too; its letters as candidates is never what was meant.
        raise TypeError("candidates must be a sequence of strings, not one string")
    encoded_prompts = encode_prompts(tokenizer, prompts) if prompts else []
    encoded = tokenizer(list(candidates), add_special_tokens=False)["input_ids"] if candidates else []
    empty = [c for c, ids in zip(candidates, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(f"candidates {empty[:5]!r} have no tokens; every candidate needs at least one")
    return encoded_prompts, encoded


def render_chat(tokenizer: Any, messages_or_prompt: str | Sequence[Message], add_generation_prompt: bool = True) -> str:
    """Apply the tokenizer's chat template; a plain string becomes a single user message."""
    if isinstance(messages_or_prompt, str):
        messages: list[dict[str, str]] = [{"role": "user", "content": messages_or_prompt}]
    else:
        messages = [dict(m) for m in messages_or_prompt]
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise UserError(f"chat message {i} needs string 'role' and 'content' fields, got {message!r}")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"model {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template: "
            "set model.chat_template in the recipe (a Jinja template, or a file holding one)"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
