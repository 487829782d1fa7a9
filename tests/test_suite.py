"""Properties of the built-in verifiable task suite (generation and grading)."""

from __future__ import annotations

import json
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_lib.core.errors import UserError
from pipeline_lib.suite import (
    DIFFICULTIES,
    FAMILIES,
    SuiteItem,
    Verdict,
    generate_suite,
    split_of,
    summarize,
    verify,
)
from pipeline_lib.suite.topics import TOPICS

PER_CELL = 25  # items per (family, difficulty) in the property sweeps


def _suite(split: str, seed: int = 0) -> list[SuiteItem]:
    return generate_suite(split, PER_CELL * len(FAMILIES) * len(DIFFICULTIES), seed=seed)


@pytest.fixture(scope="module")
def items() -> list[SuiteItem]:
    return _suite("train") + _suite("eval")


def test_sweep_covers_every_family_and_difficulty(items: list[SuiteItem]) -> None:
    cells = {(item.family, item.difficulty) for item in items}
    assert cells == {(family, level) for family in FAMILIES for level in DIFFICULTIES}


def test_reference_scores_exactly_one(items: list[SuiteItem]) -> None:
    for item in items:
        verdict = verify(item, item.reference)
        assert verdict.score == 1.0, (item.prompt, item.reference, verdict.reasons)
        assert verdict.reasons == []


def test_empty_answer_scores_zero(items: list[SuiteItem]) -> None:
    for item in items[:: len(DIFFICULTIES)]:
        for empty in ("", "   \n", None):
            assert verify(item, empty).score == 0.0


# --- perturbations: each returns wrong answers derived from the reference ---

def _number_perturbations(item: SuiteItem, rng: random.Random) -> list[str]:
    answer = item.spec["answer"]
    return [str(answer + 1), str(answer - rng.randint(2, 50)), f"The answer is {answer * 3 + 7}."]


def _list_perturbations(item: SuiteItem, rng: random.Random) -> list[str]:
    values = [str(value) for value in item.spec["answer"]]
    wrong = [values[:-1], values + [values[0]]]
    if len(set(values)) > 1:
        shuffled = values[:]
        while shuffled == values:
            rng.shuffle(shuffled)
        wrong.append(shuffled)
    return [", ".join(answer) for answer in wrong]


def _mutate(text: str, rng: random.Random) -> str:
    position = rng.choice([i for i, char in enumerate(text) if char.isalpha()])
    replacement = "q" if text[position].lower() != "q" else "z"
    replacement = replacement.upper() if text[position].isupper() else replacement
    return text[:position] + replacement + text[position + 1 :]


def _text_perturbations(item: SuiteItem, rng: random.Random) -> list[str]:
    answer = item.spec["answer"]
    wrong = [_mutate(answer, rng), answer[: len(answer) // 2]]
    if item.spec["case_sensitive"]:
        wrong.append(answer.lower())
    return wrong


def _violate(reference: str, constraint: dict) -> str:
    kind = constraint["type"]
    if kind == "json_key":
        return reference.replace(f'"{constraint["key"]}"', '"other"')
    if kind == "bullets":
        return "\n".join(reference.splitlines()[:-1])
    if kind == "lowercase":
        last = max(i for i, char in enumerate(reference) if char.islower())
        return reference[:last] + reference[last].upper() + reference[last + 1 :]
    if kind == "min_words":
        return " ".join(reference.split()[: constraint["n"] // 2])
    if kind == "max_words":
        return reference + " and so on" * constraint["n"]
    if kind == "include":
        return re.sub(rf"\b{constraint['word']}\b", "thing", reference)
    return reference + " " + constraint["word"]


def _format_perturbations(item: SuiteItem, rng: random.Random) -> list[str]:
    return [_violate(item.reference, constraint) for constraint in item.spec["constraints"]]


PERTURB = {
    "number": _number_perturbations,
    "list": _list_perturbations,
    "text": _text_perturbations,
    "format": _format_perturbations,
}


def test_perturbed_answers_score_strictly_lower(items: list[SuiteItem]) -> None:
    rng = random.Random(7)
    checked = set()
    for item in items:
        for wrong in PERTURB[item.spec["check"]](item, rng):
            verdict = verify(item, wrong)
            assert 0.0 <= verdict.score < 1.0, (item.prompt, wrong)
            assert verdict.reasons, (item.prompt, wrong)
        checked.add(item.spec["check"])
    assert checked == set(PERTURB)


def test_echoing_the_input_of_a_text_task_earns_nothing(items: list[SuiteItem]) -> None:
    text_items = [item for item in items if item.spec["check"] == "text"]
    assert text_items
    for item in text_items:
        assert verify(item, item.spec["source"]).score == 0.0


def test_echoing_the_input_of_a_list_task_earns_nothing(items: list[SuiteItem]) -> None:
    list_items = [item for item in items if item.spec["check"] == "list"]
    assert {(item.family, item.difficulty, item.split) for item in list_items} == {
        (family, level, split) for family in ("sorting", "filtering") for level in DIFFICULTIES
        for split in ("train", "eval")}
    for item in list_items:
        shown = ", ".join(map(str, item.spec["input"]))
        for echo in (shown, f"The numbers are {shown}.", f"[{shown}]", item.prompt):
            verdict = verify(item, echo)
            assert verdict.score == 0.0, (item.prompt, echo, verdict)
        assert "same as the input list" in verify(item, shown).reasons


def test_list_answers_closer_than_the_input_earn_credit(items: list[SuiteItem]) -> None:
    """One element short or one too many is a single edit; the input is at least two away
    (a shuffled list, or a filter that drops two or more), so such answers beat the echo."""
    checked = set()
    for item in items:
        spec = item.spec
        if spec["check"] != "list":
            continue
        if item.family == "filtering" and len(spec["input"]) - len(spec["answer"]) < 2:
            continue
        dropped_last, repeated_first = _list_perturbations(item, random.Random(0))[:2]
        for wrong in [repeated_first] + ([dropped_last] if dropped_last else []):
            assert 0.0 < verify(item, wrong).score < 1.0, (item.prompt, wrong)
        checked.add(item.family)
    assert checked == {"sorting", "filtering"}


def test_echoing_a_format_prompt_earns_nothing_and_quoting_it_costs_nothing(items: list[SuiteItem]) -> None:
    format_items = [item for item in items if item.family == "format"]
    assert format_items
    for item in format_items:
        assert verify(item, item.prompt) == Verdict(0.0, ["only repeats the instructions"])
        assert verify(item, item.prompt.upper()).score == 0.0
        assert verify(item, f"{item.prompt}\n{item.reference}").score == 1.0, item.prompt


def test_every_format_constraint_kind_is_exercised(items: list[SuiteItem]) -> None:
    kinds = {c["type"] for item in items if item.family == "format" for c in item.spec["constraints"]}
    assert kinds == {"json_key", "bullets", "lowercase", "min_words", "max_words", "include", "exclude"}


def test_scores_stay_in_unit_interval_for_unrelated_answers(items: list[SuiteItem]) -> None:
    rng = random.Random(3)
    junk = [
        "I don't know.", "-5", "[]", "{", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12", "- a\n- b\n- c\n- d\n- e\n- f",
    ]
    for item in items[::5]:
        for response in junk + [rng.choice(items).reference]:
            assert 0.0 <= verify(item, response).score <= 1.0


def test_generation_is_deterministic_and_extends_by_prefix() -> None:
    first = generate_suite("train", 60, seed=4)
    assert first == generate_suite("train", 60, seed=4)
    assert generate_suite("train", 30, seed=4) == first[:30]
    assert generate_suite("train", 60, seed=5) != first


def test_train_and_eval_prompts_never_overlap() -> None:
    train = {item.prompt for seed in (0, 1) for item in _suite("train", seed)}
    evals = {item.prompt for seed in (0, 1) for item in _suite("eval", seed)}
    assert train and evals
    assert not train & evals
    assert {split_of(prompt) for prompt in train} == {"train"}
    assert {split_of(prompt) for prompt in evals} == {"eval"}


def test_ids_are_unique_and_name_split_and_family(items: list[SuiteItem]) -> None:
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.id.startswith(f"{item.split}-") and item.family in item.id


def test_prompts_within_a_split_do_not_repeat(items: list[SuiteItem]) -> None:
    train = [item.prompt for item in items if item.split == "train"]
    assert len(set(train)) == len(train)


def test_family_and_difficulty_filters() -> None:
    chosen = generate_suite("eval", 20, families=["sorting", "format"], difficulty=[3])
    assert {item.family for item in chosen} == {"sorting", "format"}
    assert {item.difficulty for item in chosen} == {3}


def _cell(family: str, level: int) -> list[SuiteItem]:
    return generate_suite("train", 40, families=[family], difficulty=[level])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_difficulty_makes_tasks_bigger() -> None:
    list_lengths = [_mean([len(item.spec["answer"]) for item in _cell("sorting", level)]) for level in DIFFICULTIES]
    assert list_lengths[0] < list_lengths[1] < list_lengths[2]
    sums = [_mean([abs(item.spec["answer"]) for item in _cell("arithmetic", level)]) for level in DIFFICULTIES]
    assert sums[0] < sums[1] and sums[0] < sums[2]
    constraints = [{len(item.spec["constraints"]) for item in _cell("format", level)} for level in DIFFICULTIES]
    assert constraints == [{2}, {3}, {4}]


def test_bad_arguments_raise_user_errors() -> None:
    with pytest.raises(UserError, match="split"):
        generate_suite("test", 5)
    with pytest.raises(UserError, match="families"):
        generate_suite("train", 5, families=["poetry"])
    with pytest.raises(UserError, match="difficulty"):
        generate_suite("train", 5, difficulty=[4])
    with pytest.raises(UserError, match="non-negative"):
        generate_suite("train", -1)


def test_parquet_round_trip_keeps_verification(items: list[SuiteItem], tmp_path) -> None:
    sample = items[::7]
    path = tmp_path / "suite.parquet"
    pq.write_table(pa.Table.from_pylist([item.to_row() for item in sample]), path)
    rows = pq.read_table(path).to_pylist()
    assert all(isinstance(value, (str, int)) for row in rows for value in row.values())
    rng = random.Random(11)
    for item, row in zip(sample, rows):
        assert SuiteItem.from_row(row) == item
        for response in [item.reference, *PERTURB[item.spec["check"]](item, rng)]:
            assert verify(row, response) == verify(item, response)


def test_bad_rows_raise_user_errors_naming_the_field() -> None:
    row = generate_suite("train", 1)[0].to_row()
    with pytest.raises(UserError, match="prompt"):
        SuiteItem.from_row({key: value for key, value in row.items() if key != "prompt"})
    with pytest.raises(UserError, match="spec"):
        SuiteItem.from_row(row | {"spec": "{not json"})
    with pytest.raises(UserError, match="difficulty"):
        SuiteItem.from_row(row | {"difficulty": "hard"})
    with pytest.raises(UserError, match="check"):
        verify(row | {"spec": json.dumps({"check": "poetry"})}, "42")


# --- tolerant parsing and graded credit ---

def _number(answer: int) -> dict:
    return {"spec": {"check": "number", "answer": answer}}


@pytest.mark.parametrize("response", [
    "42", "The answer is 42.", "Answer: **42**", "40 + 2 = 42", "There are forty-two... no: 42 apples.",
    "The answer is 42, because 40 plus 2 is 42 and 2 is small.",
])
def test_number_answers_in_prose_score_one(response: str) -> None:
    assert verify(_number(42), response).score == 1.0


def test_number_partial_credit_is_graded() -> None:
    close, far = verify(_number(42), "41").score, verify(_number(42), "20").score
    assert 0.0 < close < 1.0 and far == 0.0
    stated = verify(_number(42), "42? No, it is 17.")
    assert stated.score == 0.5 and "not the final answer" in stated.reasons[-1]
    assert verify(_number(3), "The letter appears three times.").score == 1.0
    assert verify(_number(1234), "1,234").score == 1.0
    assert verify(_number(-7), "It is -7.").score == 1.0
    assert verify(_number(42), "41").reasons == ["expected 42, got 41"]


@pytest.mark.parametrize("response", [
    "1, 2, 3", "[1, 2, 3]", "1\n2\n3", "- 1\n- 2\n- 3", "Sorted: 1, 2, 3.", "The sorted list is [1, 2, 3].",
])
def test_list_answers_in_any_layout_score_one(response: str) -> None:
    assert verify({"spec": {"check": "list", "answer": [1, 2, 3], "items": "int"}}, response).score == 1.0


def test_list_credit_is_the_share_of_the_way_from_the_input() -> None:
    spec = {"spec": {"check": "list", "answer": [1, 2, 3, 4], "input": [3, 1, 4, 2], "items": "int"}}
    # The input is 4 edits away (LCS 2 of 4); each missing/extra element is 1, a misplaced one 2.
    assert verify(spec, "1, 2, 3").score == 0.75
    assert verify(spec, "1, 2, 4, 3").score == 0.5
    assert verify(spec, "3, 1, 4, 2") == Verdict(
        0.0, ["expected [1, 2, 3, 4], got [3, 1, 4, 2]", "right elements, wrong order", "same as the input list"])
    farther = verify(spec, "4, 3, 2, 1")
    assert farther.score == 0.0 and farther.reasons[-1] == "no closer to the answer than the input list"
    words = {"spec": {"check": "list", "answer": ["lemon", "lizard"], "items": "str",
                      "input": ["apple", "lemon", "tiger", "lizard"]}}
    assert verify(words, "Lemon").score == 0.5
    assert verify(words, "Apple, Lemon, Tiger, Lizard").score == 0.0


def test_list_credit_without_a_stored_input_orders_answers_by_closeness() -> None:
    spec = {"spec": {"check": "list", "answer": [1, 2, 3, 4], "items": "int"}}
    swapped = verify(spec, "1, 2, 4, 3").score
    missing = verify(spec, "1, 2, 3").score
    wrong = verify(spec, "7, 8, 9").score
    assert 1.0 > missing > wrong == 0.0
    assert 1.0 > swapped > wrong
    assert verify(spec, "1, 2, 4, 3").reasons[-1] == "right elements, wrong order"
    words = {"spec": {"check": "list", "answer": ["apple", "pear"], "items": "str"}}
    assert verify(words, "Apple, and Pear.").score == 1.0
    assert verify(words, "1. apple\n2. pear").score == 1.0


def test_text_answers_are_found_and_graded() -> None:
    reverse = {"spec": {"check": "text", "answer": "nedrag", "case_sensitive": False, "ignore_spaces": False}}
    assert verify(reverse, 'The reversed word is "nedrag".').score == 1.0
    assert verify(reverse, "Nedrag").score == 1.0
    assert 0.5 < verify(reverse, "nedrog").score < 1.0
    assert verify(reverse, "garden").score < 0.5
    shout = {"spec": {"check": "text", "answer": "GARDEN", "case_sensitive": True, "ignore_spaces": False}}
    assert verify(shout, "In capital letters: GARDEN").score == 1.0
    # Echoing the input unchanged earns nothing when the task is the case change.
    assert verify(shout, "garden").score == 0.0
    assert 0.0 < verify(shout, "GARDEn").score < 1.0
    letters = {"spec": {"check": "text", "answer": "tgp", "case_sensitive": False, "ignore_spaces": True}}
    assert verify(letters, "T G P").score == 1.0


def test_format_score_is_fraction_of_constraints_met() -> None:
    spec = {"spec": {"check": "format", "constraints": [
        {"type": "lowercase"}, {"type": "include", "word": "whiskers"}, {"type": "exclude", "word": "cute"}]}}
    assert verify(spec, "cats use their whiskers.").score == 1.0
    verdict = verify(spec, "Cats use their whiskers.")
    assert verdict.score == pytest.approx(2 / 3) and verdict.reasons == ["not all lowercase (found C)"]
    assert verify(spec, "Cute Cats.").score == 0.0
    bullets = {"spec": {"check": "format", "constraints": [{"type": "bullets", "n": 4}]}}
    assert verify(bullets, "Here you go:\n* a\n* b\n1. c\n2) d").score == 1.0
    assert verify(bullets, "- a\n- b").score == 0.5
    as_json = {"spec": {"check": "format", "constraints": [{"type": "json_key", "key": "fact"}]}}
    assert verify(as_json, '```json\n{"fact": "they purr"}\n```').score == 1.0
    assert verify(as_json, '{"note": "they purr"}').score == 0.5
    assert verify(as_json, "fact: they purr").score == 0.0


def test_topic_facts_never_use_their_forbidden_words() -> None:
    for topic in TOPICS:
        for fact in topic.facts:
            words = set(re.findall(r"[a-z]+", fact))
            assert not words & set(topic.avoid), (topic.name, fact)


# --- summary ---

def test_summarize_reports_per_family_and_overall(items: list[SuiteItem]) -> None:
    sample = items[: 3 * len(FAMILIES)]
    perfect = summarize(sample, [item.reference for item in sample])
    assert perfect["overall"] == {"mean_score": 1.0, "pass_rate": 1.0, "count": len(sample)}
    assert list(perfect["families"]) == list(FAMILIES)
    assert all(stats["count"] == 3 for stats in perfect["families"].values())
    half = [item.reference if i % 2 == 0 else "" for i, item in enumerate(sample)]
    report = summarize([item.to_row() for item in sample], half)
    expected = sum(i % 2 == 0 for i in range(len(sample))) / len(sample)
    assert report["overall"]["mean_score"] == pytest.approx(expected)
    assert report["overall"]["pass_rate"] == pytest.approx(expected)
    assert set(report["difficulties"]) == {"1", "2", "3"}
    with pytest.raises(UserError, match="responses"):
        summarize(sample, [])

