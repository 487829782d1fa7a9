"""Sampling through a vLLM OpenAI-compatible server: one we start for the model, or one that already runs.

Prompts are tokenized here, exactly as the HF backend tokenizes them, and
sent as token ids, so both backends condition on the same tokens and stop on
the same EOS ids; rows come back in the same order and schema. Requests run
with bounded concurrency (``batch_size`` in flight), which is what lets
vLLM's continuous batching keep the model busy. Scoring candidates
(``choice_logprobs``) reads vLLM's prompt logprobs for the same ids the HF
backend scores.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar


from pipeline_lib.core import progress
from pipeline_lib.core.errors import UserError
from pipeline_lib.models import load_tokenizer
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams, derive_seed, encode_choices, encode_prompts
from pipeline_lib.sampling.stops import configured_eos, stop_token_ids
from pipeline_lib.sampling.vllm_server import (
    POOL,
    SEED_ARG,
    SERVED_NAME,
    ModelToServe,
    ServerError,
    ServerOptions,
    VLLMServer,
    has_cuda,
)

EXTERNAL_RETRIES = 3
REQUEST_TIMEOUT_S = 900.0

T = TypeVar("T")


class ServerGone(ConnectionError):
    """A request could not reach the server (refused, reset, or the server died mid-request)."""


class VLLMSampler(Sampler):
    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        options: ServerOptions,
        batch_size: int = 32,
        base_url: str | None = None,
        keep_warm: int = 0,
        progress: bool = True,
        failover: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        served = ModelToServe.from_folder(Path(model_path))
        self.model_id, self.batch_size, self.progress = str(model_path), batch_size, progress
        self.keep_warm = keep_warm
        # One of several replicas: a lost server is the replica set's to handle (another replica takes
        # the work at once), so it is neither restarted nor retried here.
        self.failover = failover
        self.server: VLLMServer | None = None
        # Servers we start draw seeded requests with our logits processor (vllm_plugins), so a
        # sampled answer does not depend on the server or its batch; others get the server's --seed.
        self.seed_requests = False
        if base_url:
            self.url = base_url.rstrip("/").removesuffix("/v1")
            self.model_name = self._served_model(served)
        else:
            started = time.perf_counter()
            self.server, how = POOL.acquire(served, options, keep_warm)
            waited = time.perf_counter() - started
            self.url = self.server.url
            self.model_name = f"{SERVED_NAME}-adapter" if served.adapter else SERVED_NAME
            self.seed_requests = True
            if how == "started" or waited > 1:
                how = f"{how}, waited {waited:.1f} s" if how != "started" else f"started in {waited:.1f} s"
            if options.devices:
                how += f", {'GPUs' if has_cuda() else 'cores'} {options.devices}"
            print(f"vllm: serving {model_path} at {self.url} ({how})", file=sys.stderr)
        # An adapter folder may hold only the adapter; its tokenizer is the base model's.
        with_tokenizer = served.adapter if served.adapter and (served.adapter / "tokenizer_config.json").is_file() else served.base
        self.tokenizer = load_tokenizer(with_tokenizer)
        self.stop_token_ids = stop_token_ids(self.tokenizer, configured_eos(served.base))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]:
        if not prompts:
            return []
        encoded = encode_prompts(self.tokenizer, prompts)
        return self._retrying(partial(self._generate_all, encoded, params))

    def choice_logprobs(self, prompts: list[str], candidates: Sequence[str]) -> list[list[float]]:
        encoded, choices = encode_choices(self.tokenizer, prompts, candidates)
        if not encoded or not choices:
            return [[] for _ in encoded]
        # One-token candidates (a judge's labels) are read at the next position, where the prompt's cached
        # prefix serves every candidate; longer ones need the prompt logprobs, which bypass that cache.
        score = self._next_token if all(len(c) == 1 for c in choices) else self._score
        requests = [partial(score, prompt_ids, choice_ids) for prompt_ids in encoded for choice_ids in choices]
        totals = iter(self._retrying(partial(self._run_requests, requests)))
        return [[next(totals) for _ in choices] for _ in encoded]

    def close(self) -> None:
        if self.server is not None:
            POOL.release(self.server, self.keep_warm)
            self.server = None

    def _retrying(self, work: Callable[[], T]) -> T:
        """Run ``work`` (all of a call's requests), running all of it again if the server goes away.

        A server we started is restarted once; an external one is given a few
        more tries. Requests that had finished are sent again too: they are
        cheap next to a restart, and a call's results then all come from one
        server.
        """
        attempts = 1 if self.failover else 2 if self.server is not None else EXTERNAL_RETRIES
        for attempt in range(1, attempts + 1):
            try:
                return work()
            except ServerGone as gone:
                if attempt == attempts:
                    raise ServerError(self._gone_message(gone)) from None
                self._recover(gone, attempt)
        raise AssertionError("unreachable")

    def _run_requests(self, requests: list[Callable[[], T]], rows_each: int = 0) -> list[T]:
        """Results of ``requests`` in their order, ``batch_size`` of them in flight at a time; each finished
        one counts ``rows_each`` rows on the stage's display."""
        results: list[T] = []
        pool = ThreadPoolExecutor(max_workers=self.batch_size)
        futures = [pool.submit(request) for request in requests]
        try:
            for future in futures:
                results.append(future.result())
                if self.progress and rows_each:
                    progress.advance(rows_each)
        finally:
            # On ctrl-C or a failed request, queued requests are dropped, not
            # waited for; requests in flight end with the server.
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _generate_all(self, encoded: list[list[int]], params: SamplingParams) -> list[Sample]:
        # Greedy samples of one prompt are identical: ask for one and copy it.
        n = 1 if params.greedy else params.n
        # A seeded sample is a request of its own: the n answers of one request would share its seed.
        each = 1 if self.seed_requests and not params.greedy else n
        requests = [
            partial(self._complete, ids, params, each, derive_seed(params.seed, "prompt", index, "sample", first) % 2**31)
            for index, ids in enumerate(encoded)
            for first in range(0, n, each)
        ]
        completed = iter(self._run_requests(requests, rows_each=params.n if params.greedy else each))
        per_prompt = [[s for _ in range(0, n, each) for s in next(completed)] for _ in encoded]
        return [
            replace(per_prompt[p][0 if params.greedy else s], prompt_index=p, sample_index=s)
            for p in range(len(encoded))
            for s in range(params.n)
        ]

    def _complete(self, prompt_ids: list[int], params: SamplingParams, n: int, seed: int) -> list[Sample]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompt_ids,
            "n": n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": 1.0 if params.greedy else params.top_p,
            "stop_token_ids": self.stop_token_ids,
            "skip_special_tokens": True,
            "return_token_ids": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if self.seed_requests and not params.greedy:
            body["vllm_xargs"] = {SEED_ARG: seed}
        response = self._post("/v1/completions", body)
        samples = []
        for choice in sorted(response["choices"], key=lambda c: c["index"]):
            reason = "length" if choice.get("finish_reason") == "length" else "stop"
            tokens = choice.get("token_ids")
            count = len(tokens) if tokens is not None else response["usage"]["completion_tokens"] // n
            samples.append(Sample(0, choice["index"], choice["text"], len(prompt_ids), count, reason))
        return samples

    def _next_token(self, prompt_ids: list[int], choice_ids: list[int]) -> float:
        """The logprob of the one token ``choice_ids`` as the next token after ``prompt_ids``.

        ``allowed_token_ids`` makes the server generate exactly that token, and
        the logprob it returns for it is the model's own (vLLM reports raw
        logprobs, before the restriction); the prompt is an ordinary prefix, so
        asking again for the next candidate reuses its cache.
        """
        body: dict[str, Any] = {
            "model": self.model_name, "prompt": prompt_ids, "max_tokens": 1, "temperature": 0,
            "allowed_token_ids": choice_ids, "logprobs": 0,
        }  # fmt: skip
        logprobs = (self._post("/v1/completions", body)["choices"][0].get("logprobs") or {}).get("token_logprobs")
        if not logprobs:
            raise UserError(f"the vLLM server at {self.url} returned no logprobs; choice_logprobs needs `logprobs`")
        return float(logprobs[0])

    def _score(self, prompt_ids: list[int], choice_ids: list[int]) -> float:
        """The summed logprob of ``choice_ids`` after ``prompt_ids``, from vLLM's prompt logprobs.

        The candidate is sent as the end of the prompt, so the server scores
        exactly these ids (teacher-forced, like the HF backend) instead of
        sampling. ``prompt_logprobs`` is vLLM's extension to the completions
        API: per prompt position, the logprob of the token there given those
        before it (0: no alternatives besides it), keyed by token id, so no
        decoded text has to be matched back to tokens. vLLM wants at least
        one new token; a greedy one costs a single decode step.
        """
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompt_ids + choice_ids,
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": 0,
        }
        response = self._post("/v1/completions", body)
        positions = response["choices"][0].get("prompt_logprobs")
        if not positions or len(positions) != len(body["prompt"]):
            raise UserError(
                f"the vLLM server at {self.url} returned no prompt logprobs for a {len(body['prompt'])}-token prompt; "
                "choice_logprobs needs vLLM's `prompt_logprobs` request parameter"
            )
        total = 0.0
        for position, token in enumerate(choice_ids, start=len(prompt_ids)):
            total += positions[position][str(token)]["logprob"]
        return total

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            if error.code >= 500:
                raise ServerGone(f"HTTP {error.code} from {self.url}{path}: {detail}") from None
            # A 4xx is about the request (a prompt longer than the context), not the server.
            raise UserError(f"vLLM rejected a request to {self.url}{path} (HTTP {error.code}): {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ServerGone(f"{self.url}{path}: {error}") from None

    def _get(self, path: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise UserError(f"sampler.base_url: no vLLM server answers at {self.url} ({error})") from None

    def _served_model(self, served: ModelToServe) -> str:
        """The server's name for the model this sampler must sample; an error if it serves another one."""
        wanted = {str(p.resolve()) for p in (served.adapter or served.base, served.base) if p}
        models = self._get("/v1/models").get("data", [])
        for entry in models:
            if entry.get("id") in wanted or _resolved(entry.get("root")) in wanted:
                return entry["id"]
        names = ", ".join(f"{m.get('id')} ({m.get('root')})" for m in models) or "nothing"
        raise UserError(
            f"sampler.base_url: the server at {self.url} serves {names}, not {served.adapter or served.base}; "
            "start it with that model, or leave base_url unset so alignflow starts one per model"
        )

    def _recover(self, gone: ServerGone, attempt: int) -> None:
        if self.server is not None:
            # Dead, or alive with a dead engine (HTTP 500): either way a fresh server is the retry.
            print(f"vllm: {self.server.describe_failure()}\nvllm: restarting it and retrying the shard", file=sys.stderr)
            self.server.restart(self.url)
            self.url = self.server.url
        else:
            wait = 2.0 * attempt
            print(f"vllm: {gone}; retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)

    def _gone_message(self, gone: ServerGone) -> str:
        if self.server is not None:
            return f"{self.server.describe_failure()}\n(the last request failed with: {gone})"
        tries = "" if self.failover else f" after {EXTERNAL_RETRIES} tries"
        return f"the vLLM server at {self.url} did not answer{tries}: {gone}"


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
