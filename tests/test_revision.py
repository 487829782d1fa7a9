"""SEFT reviser data: decision labels, the template, parsing, example building and balancing."""

from collections import Counter

import pytest

from pipeline_lib.core.errors import UserError
from pipeline_lib.revision import (
    DECISIONS,
    MALFORMED_REASONS,
    ParsedRevision,
    ReviserExample,
    balance_decisions,
    decision_counts,
    enhanced_target,
    examples_from_preference,
    examples_from_scored_samples,
    label_decision,
    parse_reviser_output,
    reviser_messages,
    reviser_target,
    text_gap,
    to_chat_rows,
    warmup_examples,
)

TAU_NONE, TAU_MAJOR = 0.1, 0.5


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (-0.2, "none"),
        (0.0, "none"),
        (0.1, "none"),
        (0.1000001, "minor"),
        (0.3, "minor"),
        (0.5, "minor"),
        (0.5000001, "major"),
        (1.0, "major"),
    ],
)
def test_label_decision_at_and_around_thresholds(gap: float, expected: str) -> None:
    assert label_decision(gap, TAU_NONE, TAU_MAJOR) == expected


def test_label_decision_with_equal_thresholds_has_no_minor() -> None:
    assert [label_decision(g, 0.2, 0.2) for g in (0.2, 0.21)] == ["none", "major"]


def test_label_decision_rejects_bad_thresholds_and_nan() -> None:
    with pytest.raises(ValueError, match="tau_none"):
        label_decision(0.3, 0.6, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        label_decision(float("nan"), TAU_NONE, TAU_MAJOR)


# --- template -------------------------------------------------------------


def test_reviser_messages_hold_instruction_response_and_decision_first_format() -> None:
    messages = reviser_messages("Add 2 and 3.", "The answer is 6.")
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert "Add 2 and 3." in content and "The answer is 6." in content
    assert content.index("Decision:") < content.index("Revision:")
    assert all(decision in content for decision in DECISIONS)


def test_reviser_messages_render_a_dialogue_with_speaker_names() -> None:
    dialogue = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello, how can I help?"},
        {"role": "user", "content": "tell me a joke"},
    ]
    content = reviser_messages(dialogue, "No.")[0]["content"]
    assert "User: hi\n\nAssistant: hello, how can I help?\n\nUser: tell me a joke" in content


def test_reviser_messages_reject_a_dialogue_not_ending_with_the_user() -> None:
    with pytest.raises(ValueError, match="user turn"):
        reviser_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "c")


def test_reviser_target_is_exactly_the_documented_text() -> None:
    assert reviser_target("minor", "Fixed.\nLine two") == "Decision: minor\nRevision:\nFixed.\nLine two"
    with pytest.raises(ValueError, match="unknown reviser decision"):
        reviser_target("small", "x")
    with pytest.raises(ValueError, match="empty"):
        reviser_target("none", "  \n")


# --- parsing --------------------------------------------------------------


@pytest.mark.parametrize("decision", DECISIONS)
@pytest.mark.parametrize("revision", ["42", "First line.\n\n- item one\n- item two\n\nDecision: quoted later"])
def test_target_round_trips_through_the_parser(decision: str, revision: str) -> None:
    parsed = parse_reviser_output(reviser_target(decision, revision), finish_reason="stop")
    assert parsed == ParsedRevision(decision, revision, None)


@pytest.mark.parametrize(
    "text",
    [
        "Decision: major\nRevision:\nBetter answer.",
        "  \n\n decision : MAJOR \n\n  revision:\n  Better answer.  \n",
        "DECISION:major\nREVISION :  Better answer.",
    ],
)
def test_parser_tolerates_case_whitespace_and_spaces_around_colons(text: str) -> None:
    assert parse_reviser_output(text) == ParsedRevision("major", "Better answer.", None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no-decision"),
        ("Revision:\nabc", "no-decision"),
        # The decision must come first: prose before it, or on a later line, is malformed.
        ("Sure! Decision: minor\nRevision:\nabc", "no-decision"),
        ("Here is my review.\nDecision: minor\nRevision:\nabc", "no-decision"),
        ("Decision: small\nRevision:\nabc", "unknown-decision"),
        ("Decision: minor.\nRevision:\nabc", "unknown-decision"),
        ("Decision:\nRevision:\nabc", "unknown-decision"),
        ("Decision: minor\nabc", "no-revision"),
        ("Decision: none", "no-revision"),
        ("Decision: major\nRevision:\n   \n", "empty-revision"),
    ],
)
def test_parser_reports_each_malformed_reason(text: str, reason: str) -> None:
    parsed = parse_reviser_output(text, finish_reason="stop")
    assert parsed == ParsedRevision(None, None, reason)
    assert reason in MALFORMED_REASONS
    assert enhanced_target(parsed, "original") is None


@pytest.mark.parametrize("decision", ["minor", "major"])
def test_truncated_minor_or_major_is_malformed(decision: str) -> None:
    text = f"Decision: {decision}\nRevision:\nA long answer that was cut"
    assert parse_reviser_output(text, finish_reason="length").malformed == "truncated"
    assert parse_reviser_output(text, finish_reason="stop").malformed is None


@pytest.mark.parametrize(
    ("text", "revision"),
    [("Decision: none\nRevision:\nThe original ans", "The original ans"), ("Decision: none\nRevi", None)],
)
def test_truncated_none_stays_usable_and_targets_the_original(text: str, revision: str | None) -> None:
    parsed = parse_reviser_output(text, finish_reason="length")
    assert parsed == ParsedRevision("none", revision, None)
    assert enhanced_target(parsed, "The original answer.") == "The original answer."


def test_enhanced_target_is_the_revision_for_minor_and_major() -> None:
    for decision in ("minor", "major"):
        parsed = parse_reviser_output(f"Decision: {decision}\nRevision:\nNew text")
        assert enhanced_target(parsed, "old text") == "New text"
    # A none output keeps the original even when the model did not copy it verbatim.
    assert enhanced_target(parse_reviser_output("Decision: none\nRevision:\nparaphrase"), "orig") == "orig"


# --- examples from scored samples ----------------------------------------


def scored(prompt_id: str, sample_index: int, response: str, score: float, reference: str = "REF") -> dict:
    return {
        "prompt_id": prompt_id,
        "prompt": f"question {prompt_id}",
        "response": response,
        "reference": reference,
        "score": score,
        "sample_index": sample_index,
        "family": "arithmetic",
    }


ROWS = [
    # Deliberately shuffled: output order must not depend on it.
    scored("p2", 1, "b1", 0.2),
    scored("p1", 2, "a2", 0.95),
    scored("p1", 0, "a0", 0.3),
    scored("p2", 0, "b0", 0.7),
    scored("p1", 1, "a1", 0.95),
    scored("p3", 0, "c0", 0.5, reference=""),
]


def summary(examples: list[ReviserExample]) -> list[tuple]:
    return [(ex.prompt, ex.response, ex.decision, ex.target, round(ex.gap, 6)) for ex in examples]


def test_scored_samples_against_the_reference() -> None:
    skipped: Counter[str] = Counter()
    examples = examples_from_scored_samples(ROWS, TAU_NONE, TAU_MAJOR, target="reference", skipped=skipped)
    assert summary(examples) == [
        ("question p1", "a0", "major", "REF", 0.7),
        ("question p1", "a1", "none", "a1", 0.05),
        ("question p1", "a2", "none", "a2", 0.05),
        ("question p2", "b0", "minor", "REF", 0.3),
        ("question p2", "b1", "major", "REF", 0.8),
    ]
    assert {ex.source for ex in examples} == {"suite"}
    assert skipped == {"empty-best": 1}


def test_scored_samples_against_the_best_sample_break_ties_by_sample_index() -> None:
    examples = examples_from_scored_samples(ROWS, TAU_NONE, TAU_MAJOR, target="best")
    assert summary(examples) == [
        ("question p1", "a0", "major", "a1", 0.65),
        ("question p1", "a1", "none", "a1", 0.0),
        ("question p1", "a2", "none", "a2", 0.0),
        ("question p2", "b0", "none", "b0", 0.0),
        ("question p2", "b1", "minor", "b0", 0.5),
        ("question p3", "c0", "none", "c0", 0.0),
    ]
    # A lower-indexed sample tied with the best takes the best's place.
    tied = [scored("p", 3, "late", 0.9), scored("p", 1, "early", 0.9), scored("p", 0, "low", 0.0)]
    assert [ex.target for ex in examples_from_scored_samples(tied, TAU_NONE, TAU_MAJOR, target="best")] == [
        "early",
        "early",
        "late",
    ]


def test_scored_samples_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="target"):
        examples_from_scored_samples(ROWS, TAU_NONE, TAU_MAJOR, target="gold")
    with pytest.raises(ValueError, match="sample_index"):
        examples_from_scored_samples([{k: v for k, v in ROWS[0].items() if k != "sample_index"}], 0.1, 0.5)
    with pytest.raises(ValueError, match="outside"):
        examples_from_scored_samples([scored("p", 0, "x", 1.5)], TAU_NONE, TAU_MAJOR)


# --- examples from preference pairs --------------------------------------


def pair(chosen: str, rejected: str, **extra) -> dict:
    return {"prompt": "Say thanks.", "messages": [{"role": "user", "content": "Say thanks."}], **extra} | {
        "chosen": chosen,
        "rejected": rejected,
    }


def test_preference_with_scores_labels_the_score_gap() -> None:
    rows = [
        pair("Thank you!", "thx", chosen_score=0.9, rejected_score=0.7),
        pair("Thank you!", "no", metadata={"chosen_score": 9, "rejected_score": 1}),
    ]
    examples = examples_from_preference(rows, TAU_NONE, TAU_MAJOR, source="ultrafeedback")
    assert summary(examples) == [
        ("Say thanks.", "Thank you!", "none", "Thank you!", 0.0),
        ("Say thanks.", "thx", "minor", "Thank you!", 0.2),
        ("Say thanks.", "Thank you!", "none", "Thank you!", 0.0),
        ("Say thanks.", "no", "major", "Thank you!", 8.0),
    ]
    assert {ex.source for ex in examples} == {"ultrafeedback"}


def test_preference_without_scores_infers_the_gap_from_text_similarity() -> None:
    rows = [pair("Thank you very much!", "Thank you very much."), pair("Thank you very much!", "Go away.")]
    examples = examples_from_preference(rows, 0.02, TAU_MAJOR, source="hh", similar_ratio=0.6)
    near, far = examples[1], examples[3]
    assert near.gap == pytest.approx(text_gap("Thank you very much.", "Thank you very much!"))
    assert (near.decision, near.target) == ("minor", "Thank you very much!")
    assert (far.decision, far.target) == ("major", "Thank you very much!")
    # Within tau_none of identical: the rejected reply is kept as it is.
    kept = examples_from_preference(rows[:1], 0.1, TAU_MAJOR, source="hh")[1]
    assert (kept.decision, kept.target) == ("none", "Thank you very much.")


def test_text_gap_is_the_share_of_text_to_change() -> None:
    assert text_gap("abcd", "abcd") == 0.0
    assert text_gap("abcd", "wxyz") == 1.0
    assert text_gap("abcd", "abxy") == pytest.approx(0.5)


def test_preference_skips_unusable_rows_and_counts_them() -> None:
    rows = [
        pair("same", " same "),
        pair("", "x"),
        pair("x", "  "),
        {"prompt": "", "messages": [], "chosen": "a", "rejected": "b"},
        pair("good", "bad"),
    ]
    skipped: Counter[str] = Counter()
    examples = examples_from_preference(rows, TAU_NONE, TAU_MAJOR, source="hh", skipped=skipped)
    assert [ex.response for ex in examples] == ["good", "bad"]
    assert skipped == {"identical": 1, "empty-chosen": 1, "empty-rejected": 1, "empty-prompt": 1}


def test_preference_rejects_half_or_non_numeric_scores() -> None:
    with pytest.raises(UserError, match="chosen_score"):
        examples_from_preference([pair("a", "b", chosen_score=1.0)], TAU_NONE, TAU_MAJOR, source="x")
    with pytest.raises(UserError, match="non-numeric"):
        examples_from_preference(
            [pair("a", "b", chosen_score="high", rejected_score=0)], TAU_NONE, TAU_MAJOR, source="x"
        )


# --- balancing and training rows ------------------------------------------


def made_up(decision: str, index: int) -> ReviserExample:
    return ReviserExample(f"q{index}", f"r{index}", decision, f"t{index}", "suite", 0.0)


MIXED = [made_up(d, i) for i, d in enumerate(["none"] * 10 + ["minor"] * 3 + ["major"] * 6)]


def test_balance_downsamples_to_the_smallest_class() -> None:
    balanced = balance_decisions(MIXED, seed=1)
    assert decision_counts(balanced) == {"none": 3, "minor": 3, "major": 3}
    positions = [MIXED.index(ex) for ex in balanced]
    assert positions == sorted(positions)
    assert decision_counts(balance_decisions(MIXED, seed=1, max_ratio=1.5)) == {"none": 4, "minor": 3, "major": 4}


def test_balance_is_deterministic_per_seed() -> None:
    assert balance_decisions(MIXED, seed=7) == balance_decisions(MIXED, seed=7)
    draws = {tuple(ex.response for ex in balance_decisions(MIXED, seed=seed)) for seed in range(5)}
    assert len(draws) > 1


def test_balance_ignores_an_empty_class_and_can_be_switched_off() -> None:
    no_minor = [ex for ex in MIXED if ex.decision != "minor"]
    assert decision_counts(balance_decisions(no_minor, seed=0)) == {"none": 6, "minor": 0, "major": 6}
    for ratio in (0, -1, float("inf")):
        assert balance_decisions(MIXED, seed=0, max_ratio=ratio) == MIXED
    assert balance_decisions([], seed=0) == []


def test_decision_counts_accept_examples_parses_and_strings() -> None:
    parses = [parse_reviser_output("Decision: major\nRevision:\nx"), parse_reviser_output("garbage")]
    assert decision_counts(parses) == {"none": 0, "minor": 0, "major": 1}
    assert decision_counts(["none", "none"]) == {"none": 2, "minor": 0, "major": 0}
    with pytest.raises(ValueError):
        decision_counts(["maybe"])


def test_warmup_keeps_only_examples_that_change_the_response() -> None:
    assert decision_counts(warmup_examples(MIXED)) == {"none": 0, "minor": 3, "major": 6}


def test_chat_rows_are_trl_prompt_completion_pairs() -> None:
    example = ReviserExample("Add 2 and 3.", "6", "major", "5", "suite", 1.0)
    (row,) = to_chat_rows([example])
    assert row == {
        "prompt": reviser_messages("Add 2 and 3.", "6"),
        "completion": [{"role": "assistant", "content": "Decision: major\nRevision:\n5"}],
        "decision": "major",
        "source": "suite",
    }
