"""Loaders on the real shared data files and on deliberately broken small files."""

import csv
import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import pytest

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import alignflow_home
from pipeline_lib.core.hub import is_hub_id
from pipeline_lib.data import content_hash, features_for, load_rows


# The real files, in the shared data folder; conftest's shared_data skips the tests that read them without it.
@pytest.fixture(scope="module")
def hh_file(shared_data: Path) -> Path:
    return shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"


@pytest.fixture(scope="module")
def questions_file(shared_data: Path) -> Path:
    return shared_data / "mt-bench-questions.jsonl"


@pytest.fixture(scope="module")
def references_file(shared_data: Path) -> Path:
    return shared_data / "mt-bench-reference-gpt4.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data``, gzipped when the name ends in .gz."""
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def gzip_jsonl_cut_mid_stream() -> bytes:
    """A gzip file of JSON Lines with a valid header, cut off halfway through its compressed data."""
    lines = "".join(json.dumps({"prompt": f"question {index}: {'why ' * (index % 7)}?"}) + "\n" for index in range(500))
    data = gzip.compress(lines.encode(), mtime=0)  # the same bytes on every xdist worker
    return data[: len(data) // 2]


def roles(messages: list[dict]) -> list[str]:
    return [message["role"] for message in messages]


def hh(*turns: str) -> str:
    """An HH-RLHF transcript from alternating turns, Human first."""
    return "".join(f"\n\n{'Assistant' if index % 2 else 'Human'}: {turn}" for index, turn in enumerate(turns))


@pytest.fixture(scope="module")
def hh_result(hh_file):
    return load_rows(str(hh_file), "preference")


def test_hh_rlhf_rows_are_dialogue_prefix_plus_final_replies(hh_result, hh_file):
    assert hh_result.format == "hh-rlhf"
    assert (hh_result.n_read, hh_result.n_kept) == (2312, 2299)
    assert hh_result.skipped == {
        "chosen turns do not alternate user/assistant": 8,
        "empty turn in chosen": 4,
        "rejected turns do not alternate user/assistant": 1,
    }
    assert hh_result.rows.features == features_for("preference")
    for row in hh_result.rows:
        assert roles(row["messages"]) == ["user", "assistant"] * (len(row["messages"]) // 2) + ["user"]
        assert row["prompt"] == row["messages"][-1]["content"]
        assert row["chosen"].strip() and row["rejected"].strip() and row["chosen"] != row["rejected"]
        assert "\n\nHuman:" not in row["chosen"] and "\n\nAssistant:" not in row["rejected"]
    first = hh_result.rows[0]
    assert first["source_row"] == 0 and first["source"] == str(hh_file)
    assert [m["content"] for m in first["messages"][::2]] == [
        "what are some pranks with a pen i can do?",
        "yep",
        "okay some of these do not have anything to do with pens",
    ]
    assert first["messages"][1]["content"] == "Are you looking for practical joke ideas?"
    assert first["chosen"] == (
        "No, sorry!  All of these involve a pen, the point is that you can get funny results by doing pranks with pens."
    )
    assert first["rejected"].startswith("There are lots of funny things you can do with pens")


def test_hh_rlhf_skips_are_reported_with_row_and_reason(hh_result, hh_file):
    assert str(hh_result.examples[0]) == f"row 86 of {hh_file}: empty turn in chosen"
    assert [example.row for example in hh_result.examples] == [86, 516, 667, 763, 925]
    assert hh_result.summary() == (
        f"kept 2299 of 2312 rows from {hh_file}; skipped 13: chosen turns do not alternate user/assistant (8), "
        "empty turn in chosen (4), rejected turns do not alternate user/assistant (1)"
    )


def test_ids_are_unique_content_hashes_stable_across_loads(hh_result, hh_file):
    ids = hh_result.rows["id"]
    assert len(set(ids)) == len(ids)
    again = load_rows(str(hh_file), "preference", limit=3)
    assert again.rows["id"] == ids[:3]
    first = hh_result.rows[0]
    content = {key: first[key] for key in ("prompt", "messages", "chosen", "rejected")}
    assert first["id"] == content_hash(content)


def test_hh_rlhf_as_messages_is_the_chosen_dialogue(hh_file):
    result = load_rows(str(hh_file), "messages", limit=20)
    assert (result.format, result.n_kept, result.n_read) == ("hh-rlhf", 20, 20)
    first = result.rows[0]["messages"]
    assert roles(first) == ["user", "assistant"] * 3
    assert first[-1]["content"].startswith("No, sorry!  All of these involve a pen")


def test_mt_bench_questions_are_two_turn_prompts_with_categories(questions_file):
    result = load_rows(str(questions_file), "prompt")
    assert (result.format, result.n_read, result.n_kept, result.skipped) == ("mt-bench", 80, 80, {})
    rows = result.rows
    assert all(len(turns) == 2 for turns in rows["turns"])
    assert rows["prompt"] == [turns[0] for turns in rows["turns"]]
    assert Counter(meta["category"] for meta in rows["metadata"]) == {
        category: 10
        for category in ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
    }
    by_id = {row["id"]: row for row in rows}
    assert by_id["81"]["turns"][1] == "Rewrite your previous response. Start every sentence with the letter A."
    assert by_id["81"]["reference"] == []
    # An empty reference string means "no reference for this turn", not a bad row.
    assert by_id["133"]["reference"][0] == ""
    assert by_id["133"]["reference"][1].startswith("The answer to should only include")


def test_mt_bench_reference_answers_load_through_a_column_mapping(questions_file, references_file):
    result = load_rows(
        str(references_file), "answer", columns={"id": "question_id", "response": "choices.0.turns"}, format="plain"
    )
    assert (result.n_kept, result.skipped) == (30, {})
    assert result.rows["id"] == [str(number) for number in range(101, 131)]
    first = result.rows[0]
    assert first["response"] == first["turns"][0]
    assert first["turns"][0].startswith(
        "If you have just overtaken the second person, your current position is now second"
    )
    assert len(first["turns"]) == 2
    assert first["metadata"]["model_id"] == "gpt-4" and "choices" not in first["metadata"]
    categories = {row["id"]: row["metadata"]["category"] for row in load_rows(str(questions_file), "prompt").rows}
    assert {categories[row_id] for row_id in result.rows["id"]} == {"math", "reasoning", "coding"}


def test_bad_rows_are_counted_by_reason_with_row_index(tmp_path):
    source = write_jsonl(
        tmp_path / "sft.jsonl",
        [
            {"prompt": "What is 2+2?", "response": "Four."},
            {"prompt": "Name a colour."},
            {"prompt": "   ", "response": "blue"},
            {"prompt": "Count to three.", "response": 123},
            {"prompt": "What is 2+2?", "response": "Four."},
            {"prompt": "Say hi.", "response": "hi"},
        ],
    )
    result = load_rows(str(source), "sft")
    assert (result.n_read, result.n_kept) == (6, 2)
    assert result.skipped == {
        "missing response": 1,
        "empty prompt": 1,
        "response is not a string": 1,
        "duplicate id": 1,
    }
    assert [(example.row, example.reason) for example in result.examples] == [
        (1, "missing response"),
        (2, "empty prompt"),
        (3, "response is not a string"),
        (4, "duplicate id"),
    ]
    assert result.rows["prompt"] == ["What is 2+2?", "Say hi."]
    assert result.summary().startswith(f"kept 2 of 6 rows from {source}; skipped 4: ")


def test_csv_with_column_mapping_treats_empty_cells_as_missing(tmp_path):
    source = tmp_path / "qa.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["qid", "question", "answer", "topic"])
        writer.writerows(
            [
                [1, "Capital of France?", "Paris", "geo"],
                ["", "Capital of Chile?", "Santiago", "geo"],
                [3, "Capital of Peru?", "", "geo"],
            ]
        )
    result = load_rows(str(source), "sft", columns={"id": "qid", "prompt": "question", "response": "answer"})
    assert (result.n_kept, result.skipped) == (1, {"missing id": 1, "missing response": 1})
    row = result.rows[0]
    # The id column has a gap, so it is read as floats; the id must still be "1".
    assert (row["id"], row["prompt"], row["response"], row["metadata"]) == (
        "1",
        "Capital of France?",
        "Paris",
        {"topic": "geo"},
    )


def test_parquet_preference_rows_with_message_prompts(tmp_path):
    source = tmp_path / "pairs.parquet"
    user = {"role": "user", "content": "Hello"}
    datasets.Dataset.from_list(
        [
            {"prompt": [{"role": "system", "content": "Be brief."}, user], "chosen": "Hi.", "rejected": "Hey there!"},
            {"prompt": [user], "chosen": "Same", "rejected": " Same "},
            {"prompt": [user, {"role": "assistant", "content": "Hi."}], "chosen": "a", "rejected": "b"},
            {"prompt": [{"role": "moderator", "content": "x"}], "chosen": "a", "rejected": "b"},
        ]
    ).to_parquet(str(source))
    result = load_rows(str(source), "preference")
    assert result.n_kept == 1
    assert result.skipped == {
        "chosen == rejected": 1,
        "prompt does not end with a turn by the user": 1,
        "unknown role in prompt": 1,
    }
    row = result.rows[0]
    assert roles(row["messages"]) == ["system", "user"] and row["prompt"] == "Hello"


def test_normalised_rows_written_as_parquet_reload_unchanged(tmp_path, hh_result):
    subset = hh_result.rows.select(range(5))
    path = tmp_path / "normalised.parquet"
    subset.to_parquet(str(path))
    reloaded = load_rows(str(path), "preference")
    assert reloaded.format == "plain"
    for column in ("id", "prompt", "messages", "chosen", "rejected"):
        assert reloaded.rows[column] == subset[column]


def test_hh_transcripts_that_do_not_parse_are_skipped(tmp_path):
    good = {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")}
    source = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            good,
            {"chosen": "just some text", "rejected": hh("Hi", "Go away.")},
            {"chosen": hh("Hi", "Hello!"), "rejected": hh("Bye", "Go away.")},
            {"chosen": hh("Hi", "Same."), "rejected": hh("Hi", "Same.")},
            {"chosen": "\n\nHuman: Hi\n\nHuman: Hello?\n\nAssistant: Yes.", "rejected": hh("Hi", "No.")},
            {"chosen": hh("Hi", "Hello!", "More?"), "rejected": hh("Hi", "Hello!", "More?")},
            {"chosen": 7, "rejected": hh("Hi", "No.")},
        ],
    )
    result = load_rows(str(source), "preference", format="hh-rlhf")
    assert result.n_kept == 1
    assert result.skipped == {
        "chosen is not an HH transcript": 2,
        "chosen and rejected differ before the final reply": 1,
        "chosen == rejected": 1,
        "chosen turns do not alternate user/assistant": 1,
        "chosen does not end with a turn by the assistant": 1,
    }
    row = result.rows[0]
    assert (row["messages"], row["chosen"], row["rejected"]) == (
        [{"role": "user", "content": "Hi"}],
        "Hello!",
        "Go away.",
    )


def test_messages_schema_checks_roles_and_order(tmp_path):
    system = {"role": "system", "content": "Be kind."}
    user, assistant = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}
    source = write_jsonl(
        tmp_path / "chats.jsonl",
        [
            {"messages": [system, user, assistant]},
            {"messages": [user, system, assistant]},
            {"messages": [user]},
            {"messages": [user, {"role": "assistant", "content": ""}]},
            {"messages": "Hi"},
        ],
    )
    result = load_rows(str(source), "messages")
    assert roles(result.rows[0]["messages"]) == ["system", "user", "assistant"]
    assert result.skipped == {
        "messages turns do not alternate user/assistant": 1,
        "messages does not end with a turn by the assistant": 1,
        "empty turn in messages": 1,
        "messages is not a list of role/content messages": 1,
    }


def test_a_folder_loads_every_data_file_in_order(tmp_path):
    folder = tmp_path / "pool"
    (folder / "more").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"prompt": "one"}, {"prompt": "two"}])
    with gzip.open(folder / "more" / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"prompt": "four"}) + "\n")
    (folder / "b.csv").write_text("prompt\nthree\n", encoding="utf-8")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    result = load_rows(str(folder), "prompt")
    assert result.rows["prompt"] == ["one", "two", "three", "four"]
    assert [Path(name).name for name in result.rows["source"]] == ["a.jsonl", "a.jsonl", "b.csv", "c.jsonl.gz"]
    limited = load_rows(str(folder), "prompt", limit=3)
    assert (limited.n_read, limited.rows["prompt"]) == (3, ["one", "two", "three"])


def test_a_json_array_file_loads(tmp_path):
    source = tmp_path / "prompts.json"
    source.write_text(json.dumps([{"id": 1, "prompt": "a"}, {"id": 2, "prompt": ["b", "c"]}]), encoding="utf-8")
    result = load_rows(str(source), "prompt")
    assert result.rows["id"] == ["1", "2"] and result.rows["turns"] == [["a"], ["b", "c"]]
    assert (alignflow_home() / "datasets-cache").is_dir()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_jsonl_line_that_does_not_parse_is_skipped_and_the_rest_load(tmp_path, suffix):
    lines = [
        json.dumps({"id": 7, "prompt": "first", "topic": "a"}),
        '{"prompt": oops}',
        "",
        json.dumps({"id": "b", "prompt": ["second", "third"], "topic": "b"}),
    ]
    source = tmp_path / f"mixed{suffix}"
    write_bytes(source, "".join(line + "\n" for line in lines).encode())
    result = load_rows(str(source), "prompt")
    assert (result.n_read, result.n_kept, result.skipped) == (3, 2, {"not valid JSON": 1})
    assert [(example.row, example.reason) for example in result.examples] == [(1, "not valid JSON")]
    # Blank lines get no row number, as when datasets reads the file itself.
    assert result.rows["source_row"] == [0, 2]
    assert result.rows["id"] == ["7", "b"] and result.rows["turns"] == [["first"], ["second", "third"]]
    assert result.rows["metadata"] == [{"topic": "a"}, {"topic": "b"}]
    assert result.summary() == f"kept 2 of 3 rows from {source}; skipped 1: not valid JSON (1)"


def test_a_jsonl_file_with_no_parseable_line_is_a_user_error_naming_it(tmp_path):
    source = tmp_path / "garbage.jsonl"
    source.write_text("oops\n[1, 2]\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_rows(str(source), "prompt")
    message = str(caught.value)
    assert str(source) in message and "none of its 3 rows is a JSON object" in message
    assert "row 0: not valid JSON" in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("broken.csv", "prompt,topic\nfine,a\none,b,too,many\n", "Expected 2 fields"),
        ("broken.parquet", "this is not parquet", "magic bytes"),
        ("broken.json", '[{"prompt": "fine"}, {"prompt": oops}]', "as json"),
    ],
)
def test_a_csv_parquet_or_json_array_file_that_cannot_be_parsed_is_a_user_error_naming_it(
    tmp_path, name, content, problem
):
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_rows(str(source), "prompt")
    message = str(caught.value)
    assert message.startswith(f"cannot read {source} as ") and problem in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("not-gzip.jsonl.gz", b"plain text that is not gzip\n"),
        ("truncated.jsonl.gz", gzip_jsonl_cut_mid_stream()),
        ("not-gzip.csv.gz", b"prompt\nhello\n"),
    ],
    ids=["not-gzip", "truncated", "not-gzip-csv"],
)
def test_a_damaged_gzip_file_is_a_one_line_user_error_naming_it(tmp_path, name, content):
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(Exception) as caught:
        load_rows(str(source), "prompt")
    # Not gzip.BadGzipFile, EOFError or zlib.error: those would reach the user as a traceback.
    assert isinstance(caught.value, UserError)
    message = str(caught.value)
    assert message.startswith(f"cannot read {source} as ") and "damaged or truncated .gz file" in message
    assert "\n" not in message


def test_datasets_prints_and_logs_nothing_during_loads(tmp_path, caplog, capfd):
    level, bars = logging.getLogger("datasets").level, datasets.is_progress_bar_enabled()
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    recovered = tmp_path / "recovered.jsonl"
    recovered.write_text('{"prompt": "a"}\n{"prompt": oops}\n', encoding="utf-8")
    # JSON Lines without the .jsonl suffix get no line-by-line fallback, so this load fails.
    failing = tmp_path / "failing.json"
    failing.write_text('{"prompt": "a"}\n{"prompt": oops}\n', encoding="utf-8")
    assert load_rows(str(good), "prompt").n_kept == 2
    assert load_rows(str(recovered), "prompt").n_kept == 1
    with pytest.raises(UserError, match="failing.json"):
        load_rows(str(failing), "prompt")
    assert [record.getMessage() for record in caplog.records if record.name.startswith("datasets")] == []
    assert capfd.readouterr().err == ""
    assert (logging.getLogger("datasets").level, datasets.is_progress_bar_enabled()) == (level, bars)


def test_all_rows_invalid_is_a_user_error_with_top_reasons(tmp_path):
    source = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": ""}, {"prompt": " "}, {"prompt": 3}])
    with pytest.raises(UserError) as caught:
        load_rows(str(source), "prompt")
    message = str(caught.value)
    assert str(source) in message
    assert "empty prompt (2)" in message and "prompt is not a string or a list of strings (1)" in message


def test_mapping_errors_name_the_column_file_and_choices(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        UserError,
        match=r"column 'reply' \(mapped to 'response'\) not found in .*qa\.jsonl; available columns: question, answer",
    ):
        load_rows(str(source), "sft", columns={"prompt": "question", "response": "reply"})
    with pytest.raises(UserError, match=r"unknown field 'answer' for schema 'sft'"):
        load_rows(str(source), "sft", columns={"prompt": "question", "answer": "answer"})
    with pytest.raises(UserError, match=r"qa\.jsonl has no column for 'prompt'.*available columns: question, answer"):
        load_rows(str(source), "sft", columns={"response": "answer"})


def test_bad_arguments_are_user_errors(tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    with pytest.raises(UserError, match="neither an existing file or folder nor a hub id"):
        load_rows(str(tmp_path / "nope.jsonl"), "prompt")
    with pytest.raises(UserError, match="unknown data schema 'dialog'"):
        load_rows(str(source), "dialog")
    with pytest.raises(UserError, match="unknown data format 'alpaca'"):
        load_rows(str(source), "prompt", format="alpaca")
    with pytest.raises(UserError, match="data format 'hh-rlhf' gives preference or messages or prompt rows, not schema 'sft'"):
        load_rows(str(source), "sft", format="hh-rlhf")
    with pytest.raises(UserError, match="limit must be a positive integer"):
        load_rows(str(source), "prompt", limit=0)
    (tmp_path / "blank.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="blank.jsonl holds no rows"):
        load_rows(str(tmp_path / "blank.jsonl"), "prompt")


def test_offline_local_files_load_and_hub_ids_fail_clearly(monkeypatch, questions_file):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert load_rows(str(questions_file), "prompt", limit=2).n_kept == 2
    with pytest.raises(UserError, match="hub dataset 'nobody/no-such-dataset' \\(split 'test'\\)"):
        load_rows("nobody/no-such-dataset", "prompt", split="test")


def test_only_names_that_follow_the_hubs_rules_are_taken_for_hub_ids():
    for text in ("org/name", "HuggingFaceTB/SmolLM2-135M-Instruct", "my_org/data.v2_", "o/" + "x" * 96):
        assert is_hub_id(text), text
    for text in (
        "name",
        "a/b/c",
        "org/na--me",
        "org/na..me",
        "org/name.",
        "-org/name",
        "org/name.git",
        "órg/name",
        "./data",
        "o/" + "x" * 97,
        "org/name\n",
    ):
        assert not is_hub_id(text), text
    with pytest.raises(UserError, match="'org/na--me' is neither an existing file or folder nor a hub id"):
        load_rows("org/na--me", "prompt")
