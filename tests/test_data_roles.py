"""The recipe's datasets by role: the data section, preparing a role, and the report."""

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from methods.recipe import validate_recipe
from pipeline_lib.core.errors import UserError
from pipeline_lib.data.config import DataConfig, DataSource
from pipeline_lib.data.decontaminate import NgramIndex
from pipeline_lib.data.items import ITEMS_FILE, read_prompt_items
from pipeline_lib.data.prepare import HELDOUT_FILE, REPORT_FILE, ROWS_FILE, Budget, format_report, prepare_role, read_rows
from pipeline_lib.data.sources import source_identities
from pipeline_lib.models import load_tokenizer, resolve_model
from pipeline_lib.training.losses import IGNORE_INDEX
from pipeline_lib.training.sft_data import tokenize_sft_rows

WIDE = Budget(prompt_tokens=4096, total_tokens=4096)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("tiny-llama"))


@pytest.fixture(scope="module")
def hh_rlhf_file(shared_data):
    return shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _prepare(tmp_path, tokenizer, role, sources, settings=None, budget=WIDE, eval_prompts=(), seed=0):
    out = tmp_path / f"out-{role}-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    sources = [DataSource(source=s) if isinstance(s, str) else s for s in sources]
    report = prepare_role(role, sources, settings or DataConfig(), tokenizer, budget, list(eval_prompts), seed, out)
    return report, out


def _recipe(**data):
    return validate_recipe({"name": "r", "method": "sft", "model": {"ref": "tiny-llama"}, "data": data})


# --- the data section -----------------------------------------------------------------------------------------


def test_a_role_takes_one_source_a_path_or_a_list():
    assert [s.source for s in _recipe(sft="a.jsonl").data.sft] == ["a.jsonl"]
    assert [s.limit for s in _recipe(sft={"source": "a.jsonl", "limit": 3}).data.sft] == [3]
    recipe = _recipe(sft=[{"source": "a.jsonl", "limit": 2}, "b.jsonl"])
    assert [(s.source, s.limit) for s in recipe.data.sft] == [("a.jsonl", 2), ("b.jsonl", None)]
    assert _recipe(sft="suite").data.roles() == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"preference": "p.jsonl"}, "data.preference is not read by method 'sft' (it reads data.sft)"),
        ({"source": "p.jsonl", "kind": "prompt"}, "data is now a set of datasets by role: write data.<role>"),
        ({"sft": ["a.jsonl", "suite"]}, "'suite' stands for the built-in suite on its own"),
        ({"sft": {"source": "a.jsonl", "colums": {}}}, "unknown key 'data.sft.0.colums'"),
    ],
)
def test_a_role_the_method_does_not_read_or_the_old_shape_is_an_error(data, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _recipe(**data)


def test_the_reviser_preference_setting_moved_to_data():
    raw = {"name": "r", "method": "seft", "reviser": {"preference": {"source": "p.jsonl"}}}
    with pytest.raises(UserError, match="moved to data.preference"):
        validate_recipe(raw)
    with pytest.raises(UserError, match="set reviser.n_prompts > 0 or data.preference"):
        validate_recipe({"name": "r", "method": "seft", "reviser": {"n_prompts": 0}})
    assert validate_recipe({"name": "r", "method": "seft", "reviser": {"n_prompts": 0}, "data": {"preference": "p.jsonl"}})


def test_figa_reads_revisions_or_the_reviser_never_both():
    recipe = validate_recipe({"name": "r", "method": "figa", "data": {"revisions": "r.jsonl"}})
    assert recipe.figa.revised_from == "data" and recipe.reviser is None
    with pytest.raises(UserError, match="figa.revised_from 'data' and data.revisions go together"):
        validate_recipe({"name": "r", "method": "figa", "figa": {"revised_from": "data"}})
    with pytest.raises(UserError, match="data.prompts is read by figa only with figa.revised_from 'reviser'"):
        validate_recipe({"name": "r", "method": "figa", "figa": {"revised_from": "reference"}, "data": {"prompts": "p.jsonl"}})


# --- preparing a role --------------------------------------------------------------------------------------------


def test_prompts_from_hh_rlhf_are_the_dialogue_before_its_final_reply(tmp_path, tokenizer, hh_rlhf_file):
    report, out = _prepare(tmp_path, tokenizer, "prompts", [DataSource(source=str(hh_rlhf_file), limit=20)])
    items = read_prompt_items(out)
    raw = [json.loads(line) for line in gzip.open(hh_rlhf_file, "rt")][:20]
    assert report["read"] == 20 and len(items) == report["kept"] > 0
    first = items[0]
    assert first.messages[-1]["role"] == "user" and first.prompt == first.messages[-1]["content"]
    assert first.prompt in raw[0]["chosen"] and first.reference == ""


def test_sft_rows_from_pairs_and_conversations_concatenate_with_unique_ids(tmp_path, tokenizer):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"id": 1, "prompt": "Name a colour.", "response": "Blue."}])
    talks = _jsonl(
        tmp_path / "talks.jsonl",
        [{"id": 1, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}],
    )  # fmt: skip
    report, out = _prepare(tmp_path, tokenizer, "sft", [pairs, talks])
    rows = read_rows(out / ROWS_FILE)
    assert [row["id"] for row in rows] == ["0:1", "1:1"]
    assert rows[0]["messages"] == [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    assert [source["schema"] for source in report["sources"]] == ["sft", "messages"]
    # As prompts to sample (SPIN): the conversation up to the last reply, which is the real answer.
    item = read_prompt_items(out)[1]
    assert item.prompt == "Bye" and item.reference == "Goodbye." and len(item.messages) == 3


def test_dedupe_length_filter_and_every_skip_reason_are_counted_with_their_rows(tmp_path, tokenizer):
    rows = [
        {"prompt": "Say hi.", "response": "Hi!"},
        {"prompt": "say   HI.", "response": "hi!"},  # the first one, case and spacing aside
        {"prompt": "Explain " + "very " * 300 + "slowly.", "response": "No."},
        {"prompt": "", "response": "Empty prompt."},
        {"prompt": "Count to three.", "response": "1 2 3"},
    ]
    source = _jsonl(tmp_path / "sft.jsonl", rows)
    report, out = _prepare(tmp_path, tokenizer, "sft", [source], budget=Budget(prompt_tokens=4096, total_tokens=200))
    assert (report["read"], report["kept"]) == (5, 2)
    skipped = {reason: entry["count"] for reason, entry in report["skipped"].items()}
    assert skipped == {"empty prompt": 1, "longer than train.max_length (200 tokens)": 1, "duplicate of an earlier row": 1}
    assert report["skipped"]["duplicate of an earlier row"]["first_rows"] == [f"{source}:1"]
    assert report["skipped"]["longer than train.max_length (200 tokens)"]["first_rows"] == [f"{source}:2"]
    assert [row["source_row"] for row in read_rows(out / ROWS_FILE)] == [0, 4]
    tokens = report["tokens"]["total"]
    assert set(tokens) == {"p50", "p90", "p99", "max"} and tokens["max"] <= 200
    assert json.loads((out / REPORT_FILE).read_text()) == report
    text = format_report(report)
    assert "kept 2 of 5 rows read" in text and "skipped 1: duplicate of an earlier row (first: rows 1 of sft.jsonl)" in text

    report, _ = _prepare(tmp_path, tokenizer, "sft", [source], DataConfig(dedupe=False), budget=Budget(4096, 200))
    assert report["kept"] == 3


def test_a_prompt_over_the_sampler_budget_is_skipped(tmp_path, tokenizer):
    source = _jsonl(tmp_path / "p.jsonl", [{"prompt": "short"}, {"prompt": "long " * 200}])
    report, _ = _prepare(tmp_path, tokenizer, "prompts", [source], budget=Budget(prompt_tokens=100, total_tokens=None))
    assert report["kept"] == 1 and list(report["skipped"]) == ["prompt longer than the sampler's prompt budget (100 tokens)"]


def test_an_evaluation_prompt_planted_in_training_data_is_removed_and_reported(tmp_path, tokenizer):
    planted = "Write the word 'lantern' backwards, then count its vowels and reply with both answers on one line please."
    rows = [
        {"id": "clean", "prompt": "Tell me about tea.", "response": "Tea is a drink."},
        {"id": "leak", "prompt": f"Homework: {planted.upper()} Thanks!", "response": "nretnal, 2"},
        {"id": "short-leak", "prompt": "What is 17 plus 25 exactly", "response": "42"},
    ]
    source = _jsonl(tmp_path / "sft.jsonl", rows)
    eval_prompts = [planted, "What is 17 plus 25?"]
    report, out = _prepare(tmp_path, tokenizer, "sft", [source], eval_prompts=eval_prompts)
    assert report["decontaminated_ids"] == ["leak", "short-leak"]
    assert report["skipped"]["shares a 13-gram with an evaluation prompt"]["count"] == 2
    assert [row["id"] for row in read_rows(out / ROWS_FILE)] == ["clean"]
    off = DataConfig(decontaminate={"enabled": False})
    assert _prepare(tmp_path, tokenizer, "sft", [source], off, eval_prompts=eval_prompts)[0]["kept"] == 3


def test_ngram_index_matches_words_not_punctuation_and_whole_short_prompts():
    index = NgramIndex(["one two three four five", "alpha beta"], n=4)
    assert index.hits("ONE, two; three four!") and index.hits("x alpha   beta y")
    assert not index.hits("two three five four") and not index.hits("alphabeta")


def test_the_heldout_split_is_seeded(tmp_path, tokenizer):
    source = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(20)])
    settings = DataConfig(heldout=0.25)
    first, out = _prepare(tmp_path, tokenizer, "prompts", [source], settings, seed=3)
    again, out_again = _prepare(tmp_path, tokenizer, "prompts", [source], settings, seed=3)
    other, out_other = _prepare(tmp_path, tokenizer, "prompts", [source], settings, seed=4)
    assert (first["kept"], first["heldout"]) == (15, 5)
    held = [row["id"] for row in read_rows(out / HELDOUT_FILE)]
    assert held == [row["id"] for row in read_rows(out_again / HELDOUT_FILE)]
    assert held != [row["id"] for row in read_rows(out_other / HELDOUT_FILE)]
    assert not set(held) & {item.id for item in read_prompt_items(out)}


@pytest.mark.parametrize(
    ("role", "rows", "columns", "message"),
    [
        ("sft", [{"prompt": "a", "response": "b"}], {"prompt": "question"}, r"data.sft: column 'question' \(mapped to 'prompt'\) not found"),
        ("preference", [{"prompt": "a", "response": "b"}], {}, "data.preference: .* has no column for 'chosen'"),
        ("sft", [{"prompt": "", "response": "b"}] * 3, {}, r"data.sft: no usable 'sft' rows .* empty prompt \(3\)"),
        ("revisions", [{"prompt": "a", "original": "x", "revised": "x"}], {}, "original == revised"),
    ],
)
def test_bad_sources_are_one_line_naming_the_role(tmp_path, tokenizer, role, rows, columns, message):
    source = DataSource(source=_jsonl(tmp_path / "bad.jsonl", rows), columns=columns)
    with pytest.raises(UserError, match=message) as error:
        _prepare(tmp_path, tokenizer, role, [source])
    assert "\n" not in str(error.value)


def test_mixed_sources_of_incompatible_schemas_name_the_source(tmp_path, tokenizer):
    good = _jsonl(tmp_path / "good.jsonl", [{"prompt": "a", "response": "b"}])
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(UserError, match=r"data.sft\[1\]: .*pairs.jsonl has no column for 'messages'"):
        _prepare(tmp_path, tokenizer, "sft", [good, pairs])


def test_rows_filtered_away_entirely_quote_the_main_reasons(tmp_path, tokenizer):
    source = _jsonl(tmp_path / "p.jsonl", [{"prompt": "long " * 200}, {"prompt": "long " * 300}])
    with pytest.raises(UserError, match=r"data.prompts: no row is left of 2 read: prompt longer than the sampler's prompt budget \(10 tokens\) \(2\)"):
        _prepare(tmp_path, tokenizer, "prompts", [source], budget=Budget(prompt_tokens=10, total_tokens=None))


def test_an_unreachable_hub_id_offline_names_it_and_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load hub dataset 'no-such-org/no-such-data'.*a local file or folder works offline"):
        source_identities([DataSource(source="no-such-org/no-such-data")])


def test_multi_turn_rows_put_loss_on_every_assistant_turn_only(tokenizer):
    conversation = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Fine, thanks."},
    ]
    data = tokenize_sft_rows([{"messages": conversation}], tokenizer, 512)
    ids, labels = data.dataset[0]["input_ids"], data.dataset[0]["labels"]
    trained = tokenizer.decode([token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
    assert "Hello!" in trained and "Fine, thanks." in trained
    assert "Hi there" not in trained and "How are you?" not in trained and "system" not in trained
    # One assistant turn trains exactly as a prompt-completion row does.
    single = tokenize_sft_rows([{"messages": conversation[:2]}], tokenizer, 512).dataset[0]
    pair = tokenize_sft_rows([{"prompt": conversation[:1], "completion": "Hello!"}], tokenizer, 512).dataset[0]
    assert single == pair


def test_items_file_is_what_sampling_reads(tmp_path, tokenizer):
    source = _jsonl(tmp_path / "p.jsonl", [{"id": "q1", "prompt": "Why is the sky blue?"}])
    _, out = _prepare(tmp_path, tokenizer, "prompts", [source])
    assert pq.read_table(out / ITEMS_FILE).column_names == ["id", "prompt", "messages", "reference"]
