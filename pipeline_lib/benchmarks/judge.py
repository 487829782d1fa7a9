"""The judge: a model alignflow serves, or any OpenAI-compatible endpoint, behind one small interface.

Two calls cover every protocol: ``generate`` (MT-Bench's explanation and
``[[rating]]``, a verdict to parse) and ``choose`` (the log-probability of each
label as the judge's next token: AlpacaEval's weighted annotator). A local
judge answers ``choose`` through the sampler's constrained choice, so it
always has both labels' log-probabilities; an endpoint answers it through
``top_logprobs``, and one that returns none falls back to the generated label.

The API key is read from the environment at request time and sent only in a
header: it never enters a config, an identity, a log line or an error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline_lib.benchmarks.config import JudgeConfig
from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.base import Message

TRIES = 3
TOP_LOGPROBS = 20  # the most OpenAI's API returns; a label outside them has probability ~0
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Choice:
    """A judge's answer to a constrained question: each label's log-probability (None: not returned), and its text."""

    logprobs: dict[str, float | None] | None
    text: str


class Judge(Protocol):
    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]: ...

    def choose(
        self, conversations: Sequence[Sequence[Message]], labels: Sequence[str], prefixes: Sequence[str] | None = None
    ) -> list[Choice]:
        """Each label's log-probability as the judge's next words, after its own ``prefixes`` when given."""
        ...

    def close(self) -> None: ...


def judge_identity(config: JudgeConfig, model_digest: str | None = None) -> dict[str, Any]:
    """What a judgment depends on besides its prompt: a different identity re-judges everything.

    A served model is named by its content (``model_digest``), an endpoint by
    its URL and model name. The key's variable name is not part of it: it
    changes who pays, not what is said.
    """
    who = {"model": model_digest} if config.model else {"base_url": config.base_url, "served_model_name": config.served_model_name}
    return {**who, "max_new_tokens": config.max_new_tokens, "temperature": config.temperature}


def describe_judge(config: JudgeConfig) -> str:
    return config.model if config.model else f"{config.served_model_name} at {config.base_url}"


class LocalJudge:
    """A model alignflow serves (HF in process, or its managed vLLM server), through the sampler interface."""

    def __init__(self, sampler: Any, tokenizer: Any, config: JudgeConfig, seed: int = 0) -> None:
        self.sampler, self.tokenizer, self.config, self.seed = sampler, tokenizer, config, seed

    def on(self, sampler: Any) -> LocalJudge:
        """The same judge asking through ``sampler``: one replica of its model, for one shard."""
        return self if sampler is self.sampler else LocalJudge(sampler, self.tokenizer, self.config, self.seed)

    def _render(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        from pipeline_lib.sampling import render_chat

        return [render_chat(self.tokenizer, list(c)) for c in conversations]

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        from pipeline_lib.sampling import SamplingParams

        params = SamplingParams(temperature=self.config.temperature, max_new_tokens=self.config.max_new_tokens, seed=self.seed)
        return [s.text for s in self.sampler.generate(self._render(conversations), params)]

    def choose(
        self, conversations: Sequence[Sequence[Message]], labels: Sequence[str], prefixes: Sequence[str] | None = None
    ) -> list[Choice]:
        # The rendered prompt ends where the assistant's words begin, so a prefix is the start of its answer.
        rendered = [p + (prefixes[i] if prefixes else "") for i, p in enumerate(self._render(conversations))]
        scores = self.sampler.choice_logprobs(rendered, list(labels))
        return [Choice(dict(zip(labels, row, strict=True)), labels[max(range(len(row)), key=row.__getitem__)]) for row in scores]

    def close(self) -> None:
        self.sampler.close()


def open_local_judge(config: JudgeConfig, model_path: Path, sampler_config: Any, dtype: str, seed: int) -> LocalJudge:
    from pipeline_lib.models import load_tokenizer
    from pipeline_lib.sampling import make_sampler

    sampler = make_sampler(sampler_config, model_path, dtype=dtype, batch_size=config.batch_size)
    return LocalJudge(sampler, load_tokenizer(model_path), config, seed)


class EndpointJudge:
    """Any OpenAI-compatible chat endpoint. Opening it checks that it answers and serves the named model."""

    def __init__(self, config: JudgeConfig) -> None:
        assert config.base_url and config.served_model_name
        self.config = config
        self.url = config.base_url.rstrip("/").removesuffix("/v1")
        self.model = config.served_model_name
        if config.api_key_env and not os.environ.get(config.api_key_env):
            raise UserError(f"eval.judge.api_key_env: the environment variable {config.api_key_env} is not set")
        served = [m.get("id") for m in self._call("GET", "/v1/models").get("data", [])]
        if self.model not in served:
            raise UserError(
                f"eval.judge: the endpoint at {self.url} serves {', '.join(map(str, served)) or 'no model'}, "
                f"not {self.model!r} (eval.judge.served_model_name)"
            )

    def generate(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        body = {"max_tokens": self.config.max_new_tokens, "temperature": self.config.temperature}
        return [_text(r) for r in self._complete_all(conversations, body)]

    def choose(
        self, conversations: Sequence[Sequence[Message]], labels: Sequence[str], prefixes: Sequence[str] | None = None
    ) -> list[Choice]:
        if prefixes and any(prefixes):
            # A chat API cannot continue the judge's own answer: those questions stay unanswered (counted failures).
            return [Choice(None, "") for _ in conversations]
        # AlpacaEval's weighted annotator: one token, and the top log-probabilities at that position.
        body = {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        return [_choice(r, labels) for r in self._complete_all(conversations, body)]

    def close(self) -> None:
        pass

    def _complete_all(self, conversations: Sequence[Sequence[Message]], body: dict[str, Any]) -> list[dict[str, Any]]:
        def one(messages: Sequence[Message]) -> dict[str, Any]:
            return self._call("POST", "/v1/chat/completions", {"model": self.model, "messages": [dict(m) for m in messages], **body})

        with ThreadPoolExecutor(max_workers=self.config.batch_size) as pool:
            return list(pool.map(one, conversations))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request with bounded retries on connection failures and server errors; a user mistake is one line."""
        headers = {"Content-Type": "application/json"}
        if self.config.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.config.api_key_env, '')}"
        data = json.dumps(body).encode() if body is not None else None
        problem = ""
        for attempt in range(1, TRIES + 1):
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")[:300]
                if error.code in (401, 403):
                    raise UserError(
                        f"eval.judge: the endpoint at {self.url} refused the API key (HTTP {error.code}); "
                        f"check {self.config.api_key_env or 'eval.judge.api_key_env'}"
                    ) from None
                if error.code < 500 and error.code != 429:
                    raise UserError(f"eval.judge: the endpoint at {self.url}{path} rejected a request (HTTP {error.code}): {detail}") from None
                problem = f"HTTP {error.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
                problem = str(getattr(error, "reason", error))
            if attempt < TRIES:
                print(f"judge: {self.url}{path}: {problem}; retrying in {attempt} s", file=sys.stderr, flush=True)
                time.sleep(attempt)
        raise UserError(f"eval.judge.base_url: no OpenAI-compatible judge answers at {self.url} after {TRIES} tries ({problem})")


def _text(response: dict[str, Any]) -> str:
    return (response.get("choices") or [{}])[0].get("message", {}).get("content") or ""


def _choice(response: dict[str, Any], labels: Sequence[str]) -> Choice:
    first = (response.get("choices") or [{}])[0]
    content = (first.get("logprobs") or {}).get("content") or []
    if not content:
        return Choice(None, _text(response))
    top = {entry.get("token"): entry.get("logprob") for entry in content[0].get("top_logprobs") or []}
    return Choice({label: top.get(label) for label in labels}, _text(response))
