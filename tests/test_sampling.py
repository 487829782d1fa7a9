"""The sampler interface and its HF backend, with real generation on a tiny random Llama."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerBase

from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.sampling import (
    SAMPLES_SCHEMA,
    SamplingParams,
    make_sampler,
    render_chat,
    resolve_backend,
    sample_to_parquet,
)
from pipeline_lib.sampling.hf import HFSampler, _length_groups

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)
QUESTIONS = [
    "hi",
    "What is the capital of France? Answer in one word, and then explain at length why that city "
    "became the capital, covering its history, geography and politics over the centuries.",
    "2+2",
    "Name three colours of the rainbow.",
]


@pytest.fixture(scope="session")
def sampler(hf_sampler: HFSampler) -> HFSampler:
    return hf_sampler


@pytest.fixture(scope="session")
def prompts(sampler: HFSampler) -> list[str]:
    return [render_chat(sampler.tokenizer, q) for q in QUESTIONS]


@pytest.fixture(scope="session")
def reference_model(tiny_model: Path) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def reference_greedy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, prompt: str, steps: int) -> list[int]:
    """Greedy ids from full forward passes on one unpadded prompt: an oracle independent of generate()."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for _ in range(steps):
            next_id = model(ids, logits_to_keep=1).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, -steps:].tolist()


def test_render_chat_applies_chatml(sampler: HFSampler) -> None:
    system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    assert render_chat(sampler.tokenizer, "hi") == system + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render_chat(sampler.tokenizer, messages, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )
    with pytest.raises(UserError, match="message 0"):
        render_chat(sampler.tokenizer, [{"role": "user"}])


def test_greedy_matches_reference_and_ignores_batch_padding(
    sampler: HFSampler, prompts: list[str], reference_model: LlamaForCausalLM
) -> None:
    batched = sampler.generate(prompts, GREEDY)
    alone = [sampler.generate([p], GREEDY)[0] for p in prompts]
    assert [s.text for s in batched] == [s.text for s in alone]
    assert [s.completion_tokens for s in batched] == [s.completion_tokens for s in alone]
    # The prompts differ in length by dozens of tokens, so a wrong mask or
    # position offset would change the padded ones; that only shows if the
    # model's output depends on its context at all.
    assert len({s.text for s in batched}) == len(prompts)
    shortest = min(range(len(prompts)), key=lambda i: batched[i].prompt_tokens)
    expected_ids = reference_greedy(reference_model, sampler.tokenizer, prompts[shortest], GREEDY.max_new_tokens)
    assert batched[shortest].text == sampler.tokenizer.decode(expected_ids, skip_special_tokens=True)


def test_a_batch_of_varied_lengths_writes_the_rows_each_prompt_writes_alone(
    sampler: HFSampler, prompts: list[str], tmp_path: Path
) -> None:
    """Rows of one batch are prefilled apart, in groups of about one length, into one static cache that pads
    them: the Parquet rows (greedy) must be those of every prompt sampled on its own."""
    varied = prompts + [render_chat(sampler.tokenizer, "why " * n) for n in (60, 25, 9)]
    lengths = sorted((len(sampler.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in varied), reverse=True)
    assert len(_length_groups(lengths)) >= 3, "the batch must take the grouped prefill"
    ids = [f"q{i}" for i in range(len(varied))]
    params = SamplingParams(temperature=0, max_new_tokens=10, n=2)
    sample_to_parquet(sampler, ids, varied, params, tmp_path / "batched.parquet", tmp_path / "b", len(varied))
    batch_size = sampler.batch_size
    try:
        sampler.batch_size = 1
        sample_to_parquet(sampler, ids, varied, params, tmp_path / "alone.parquet", tmp_path / "a", len(varied))
    finally:
        sampler.batch_size = batch_size
    batched, alone = pq.read_table(tmp_path / "batched.parquet"), pq.read_table(tmp_path / "alone.parquet")
    assert batched.equals(alone)
    assert len(set(batched.column("text").to_pylist())) == len(varied), "outputs must depend on the prompt"


def test_greedy_is_deterministic_and_its_n_samples_identical(sampler: HFSampler, prompts: list[str]) -> None:
    first = sampler.generate(prompts, GREEDY)
    repeated = sampler.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12, n=2))
    assert [(s.prompt_index, s.sample_index) for s in repeated] == list(itertools.product(range(len(prompts)), (0, 1)))
    assert [s.text for s in repeated] == [s.text for s in first for _ in (0, 1)]


def test_sampling_reproducible_for_a_seed_and_untouched_by_earlier_work(
    sampler: HFSampler, prompts: list[str]
) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=10, n=2, seed=7)
    first = [s.text for s in sampler.generate(prompts, params)]
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    sampler.generate(prompts[:1], SamplingParams(temperature=1.0, max_new_tokens=5, seed=99))
    again = [s.text for s in sampler.generate(prompts, params)]
    assert torch.equal(torch.rand(3), expected_draw), "generate must not consume the caller's RNG"
    assert again == first
    other_seed = [s.text for s in sampler.generate(prompts, SamplingParams(**{**params.describe(), "seed": 8}))]
    assert other_seed != first
    assert first[0] != first[1], "the n samples of a prompt should differ"


def test_top_p_keeps_only_the_nucleus(sampler: HFSampler, prompts: list[str]) -> None:
    # A nucleus this small holds just the most likely token, so sampling must reproduce greedy decoding.
    nucleus = sampler.generate(prompts, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=8, seed=1))
    greedy = sampler.generate(prompts, SamplingParams(temperature=0, max_new_tokens=8))
    assert [s.text for s in nucleus] == [s.text for s in greedy]


def test_max_new_tokens_caps_completions(sampler: HFSampler, prompts: list[str]) -> None:
    samples = sampler.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=5, n=3))
    assert all(s.completion_tokens <= 5 for s in samples)
    capped = [s for s in samples if s.completion_tokens == 5]
    assert capped and all(s.finish_reason == "length" for s in capped)
    expected_prompt_tokens = [len(sampler.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert [s.prompt_tokens for s in samples] == [n for n in expected_prompt_tokens for _ in range(3)]


@pytest.fixture(scope="session")
def eos_model(
    tiny_model: Path,
    sampler: HFSampler,
    reference_model: LlamaForCausalLM,
    prompts: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, int]:
    """The tiny model with its `<|im_end|>` and token-t output rows swapped (untied from the input embeddings).

    Greedy decoding then follows the original model exactly until the step
    where the original would have emitted t, and emits `<|im_end|>` there.
    """
    steps = reference_greedy(reference_model, sampler.tokenizer, prompts[0], 8)
    t = next(tok for k, tok in enumerate(steps) if k >= 3 and tok not in steps[:k])
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    end_id = sampler.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = model.get_output_embeddings().weight.detach().clone()
    head[[end_id, t]] = head[[t, end_id]]
    model.config.tie_word_embeddings = False
    model.get_output_embeddings().weight = torch.nn.Parameter(head)
    folder = tmp_path_factory.mktemp("tiny-llama-eos")
    model.save_pretrained(folder)
    sampler.tokenizer.save_pretrained(folder)
    return folder, t


def test_eos_stops_a_sequence_while_its_batch_continues(
    eos_model: tuple[Path, int], reference_model: LlamaForCausalLM, prompts: list[str]
) -> None:
    folder, t = eos_model
    with HFSampler(folder, batch_size=8, progress=False) as eos_sampler:
        end_id = eos_sampler.tokenizer.convert_tokens_to_ids("<|im_end|>")
        samples = eos_sampler.generate(prompts, GREEDY)
        for prompt, sample in zip(prompts, samples, strict=True):
            original = reference_greedy(reference_model, eos_sampler.tokenizer, prompt, GREEDY.max_new_tokens)
            assert end_id not in original  # otherwise the swap would change the path before t
            if t in original:
                end = original.index(t)
                assert (sample.finish_reason, sample.completion_tokens) == ("stop", end + 1)
            else:
                end = len(original)
                assert (sample.finish_reason, sample.completion_tokens) == ("length", end)
            assert sample.text == eos_sampler.tokenizer.decode(original[:end], skip_special_tokens=True)
    assert samples[0].finish_reason == "stop" and samples[0].completion_tokens < GREEDY.max_new_tokens
    assert any(s.finish_reason == "length" for s in samples), "want a row that outlives the stopped one"


def test_stop_strings_truncate_and_end_generation(sampler: HFSampler, prompts: list[str]) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=16)
    full = sampler.generate(prompts, params)
    text = full[1].text
    stop = text[len(text) // 3 : len(text) // 3 + 4]
    stopped = sampler.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16, stop=(stop, "never\x00seen")))
    cut = text.index(stop)
    assert (stopped[1].text, stopped[1].finish_reason) == (text[:cut], "stop")
    used = stopped[1].completion_tokens
    assert used < full[1].completion_tokens
    # Generation ended at the token that completed the stop string.
    assert stop in sampler.generate(prompts[1:2], SamplingParams(temperature=0, max_new_tokens=used))[0].text
    assert stop not in sampler.generate(prompts[1:2], SamplingParams(temperature=0, max_new_tokens=used - 1))[0].text
    for before, after in zip(full, stopped, strict=True):
        if stop not in before.text:
            assert (after.text, after.finish_reason) == (before.text, before.finish_reason)


def test_sample_to_parquet_schema_one_row_per_sample(sampler: HFSampler, prompts: list[str], tmp_path: Path) -> None:
    ids = [f"q{i}" for i in range(len(prompts))]
    params = SamplingParams(temperature=0.8, max_new_tokens=6, n=3)
    stats = sample_to_parquet(sampler, ids, prompts, params, tmp_path / "samples.parquet", tmp_path / "shards", 3)
    table = pq.read_table(tmp_path / "samples.parquet")
    assert table.schema.equals(SAMPLES_SCHEMA)
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["sample_index"]) for r in rows] == list(itertools.product(ids, range(3)))
    assert all(r["finish_reason"] in ("stop", "length") and r["completion_tokens"] <= 6 for r in rows)
    assert stats["n_prompts"] == 4 and stats["n_samples"] == 12 and stats["backend"] == "hf"
    assert stats["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert stats["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert stats["shards_reused"] == 0 and stats["tokens_per_second"] > 0


def test_sample_to_parquet_resumes_from_finished_shards(
    sampler: HFSampler, prompts: list[str], tmp_path: Path
) -> None:
    ids = [f"q{i}" for i in range(len(prompts))]
    params = SamplingParams(temperature=1.0, max_new_tokens=6, n=2, seed=3)
    out, shards = tmp_path / "samples.parquet", tmp_path / "shards"
    sample_to_parquet(sampler, ids, prompts, params, out, shards, shard_size=1)
    first = pq.read_table(out)
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.parquet") if p.name != "shard-00002.parquet"}
    out.unlink()
    (shards / "shard-00002.parquet").unlink()
    stats = sample_to_parquet(sampler, ids, prompts, params, out, shards, shard_size=1)
    assert (stats["shards_reused"], stats["shards_total"]) == (3, 4)
    assert {name: (shards / name).stat().st_mtime_ns for name in kept} == kept
    assert pq.read_table(out).equals(first)


def test_shards_do_not_replay_one_random_stream(sampler: HFSampler, prompts: list[str], tmp_path: Path) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=3)
    sample_to_parquet(sampler, ["a", "b"], prompts[:1] * 2, params, tmp_path / "s.parquet", tmp_path / "shards", 1)
    texts = pq.read_table(tmp_path / "s.parquet").column("text").to_pylist()
    assert texts[0] != texts[1]


def test_shards_made_from_other_params_or_prompts_are_regenerated(
    sampler: HFSampler, prompts: list[str], tmp_path: Path
) -> None:
    ids = [f"q{i}" for i in range(len(prompts))]
    out, shards = tmp_path / "samples.parquet", tmp_path / "shards"
    sample_to_parquet(sampler, ids, prompts, SamplingParams(temperature=0, max_new_tokens=8), out, shards, 2)
    shorter = SamplingParams(temperature=0, max_new_tokens=3)
    stats = sample_to_parquet(sampler, ids, prompts, shorter, out, shards, 2)
    assert stats["shards_reused"] == 0
    assert max(pq.read_table(out).column("completion_tokens").to_pylist()) <= 3
    changed = prompts[:2] + [prompts[3], prompts[2]]
    assert sample_to_parquet(sampler, ids, changed, shorter, out, shards, 2)["shards_reused"] == 1


def test_sampling_params_from_config() -> None:
    config = SamplerConfig(temperature=0.5, top_p=0.9, max_new_tokens=20, n=4, seed=11)
    params = SamplingParams.from_config(config, temperature=0, stop=["\n\n"])
    assert params == SamplingParams(temperature=0, top_p=0.9, max_new_tokens=20, n=4, seed=11, stop=("\n\n",))
    assert params.greedy
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams.from_config(config, top_p=0)


def test_make_sampler_picks_backend(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No vLLM environment: `auto` falls back to HF.
    monkeypatch.setenv("ALIGNFLOW_VLLM_PYTHON", "/nonexistent/python")
    with make_sampler(SamplerConfig(backend="auto", batch_size=5), tiny_model, "float32") as chosen:
        assert (chosen.name, chosen.batch_size) == ("hf", 5)
    with make_sampler(SamplerConfig(backend="hf"), tiny_model, "float32", batch_size=2) as chosen:
        assert (chosen.name, chosen.batch_size) == ("hf", 2)


def test_resolve_backend_prefers_an_installed_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNFLOW_VLLM_PYTHON", str(tmp_path / "missing"))
    assert resolve_backend(SamplerConfig())[0] == "hf"
    with pytest.raises(UserError, match="sampler.backend=vllm needs the vLLM environment.*make setup-vllm"):
        resolve_backend(SamplerConfig(backend="vllm"))
    # A running server needs no local environment.
    assert resolve_backend(SamplerConfig(base_url="http://127.0.0.1:8000")) == ("vllm", "the server at http://127.0.0.1:8000")
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("ALIGNFLOW_VLLM_PYTHON", str(python))
    assert resolve_backend(SamplerConfig()) == ("vllm", f"auto: vLLM environment at {python}")
    assert resolve_backend(SamplerConfig(backend="hf"))[0] == "hf"
