"""Judge prompts and verdict parsing for MT-Bench and AlpacaEval: published formats, fallbacks, garbage, debiasing."""

from __future__ import annotations

import math

import pytest

from pipeline_lib.benchmarks.parsing import (
    PositionBias,
    alpaca_choice_slot,
    combine_orders,
    model_preference,
    parse_alpaca_choice,
    parse_pair_verdict,
    parse_rating,
    position_bias,
    preference_from_logprobs,
)
from pipeline_lib.benchmarks.prompts import (
    CATEGORY_TEMPERATURES,
    JudgePrompt,
    REFERENCE_CATEGORIES,
    Question,
    alpaca_judge_messages,
    alpaca_switched,
    generation_temperature,
    judge_prompt_name,
    load_alpaca_template,
    load_judge_prompts,
    load_questions,
    load_references,
    pairwise_judge_messages,
    parse_alpaca_template,
    single_judge_messages,
)

GARBAGE = ["", None, "   ", "I think the answer is good.", "Rating: 7", "[[seven]]", "[[-3]]", "[[A]", "[8/10]"]


# ---------------------------------------------------------------- ratings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is fine. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("[[10]]", 10.0),
        ("[[1]]", 1.0),
        ("[[07]]", 7.0),
        ("Rating: [6]", 6.0),  # FastChat's backup pattern
        ("Rating: [[3]] although [9] elsewhere", 3.0),  # [[r]] is searched first
        ("first [4] then [[9]]", 9.0),  # ... even when a [r] comes earlier
        ("[[2]] and later [[9]]", 2.0),  # first match only
    ],
)
def test_parse_rating_published_formats(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_rating_garbage_is_none_not_zero(text):
    assert parse_rating(text) is None


@pytest.mark.parametrize("text", ["Rating: [[0]]", "Rating: [[11]]", "[[10.5]]", "see reference [42]", "[2023]"])
def test_parse_rating_out_of_range_is_none(text):
    assert parse_rating(text) is None


# ---------------------------------------------------------------- pairwise verdicts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Assistant A is more helpful. [[A]]", "A"),
        ("Final verdict: [[B]]", "B"),
        ("Both are equally good. [[C]]", "tie"),
        ("[[B]] ... on reflection [[A]]", "A"),  # FastChat checks A before B, wherever they occur
        ("[[C]] then [[B]]", "B"),
    ],
)
def test_parse_pair_verdict_published(text, expected):
    assert parse_pair_verdict(text) == expected


@pytest.mark.parametrize("text", GARBAGE + ["A is better", "[A]", "[[D]]", "[[a]]"])
def test_parse_pair_verdict_garbage(text):
    assert parse_pair_verdict(text) is None


def test_parse_pair_verdict_rejects_echoed_instructions_when_asked():
    echo = '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
    assert parse_pair_verdict(echo) == "A"  # the published reading
    assert parse_pair_verdict(echo, reject_ambiguous=True) is None
    assert parse_pair_verdict("clearly [[B]]", reject_ambiguous=True) == "B"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("[[8, 6]]", "A"), ("[[3,9]]", "B"), ("[[7.5, 7.45]]", "tie"), ("scores [5, 8]", "B"), ("[[x, y]]", None)],
)
def test_parse_pair_verdict_two_score_format(text, expected):
    assert parse_pair_verdict(text, "[[rating_a,rating_b]]") == expected


def test_parse_pair_verdict_unknown_format():
    with pytest.raises(ValueError):
        parse_pair_verdict("[[A]]", "[[X]]")


# ---------------------------------------------------------------- AlpacaEval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m", "m"),
        ("M", "M"),
        (" M\n", "M"),
        ('"m"', "m"),
        ("`M`.", "M"),
        ("The best model is M", "M"),
        ("I'm sure: m", "m"),  # the m of I'm is not an identifier
        ("m or M", None),
        ("Model", None),
        ("mM", None),
        ("", None),
        (None, None),
        ("both are good", None),
    ],
)
def test_parse_alpaca_choice(text, expected):
    assert parse_alpaca_choice(text) == expected


def test_alpaca_labels_name_slots():
    assert alpaca_choice_slot("m") == "A" and alpaca_choice_slot("M") == "B" and alpaca_choice_slot(None) is None


def test_preference_from_logprobs_direction_and_extremes():
    # M (the second output) much likelier: the second output is preferred.
    assert preference_from_logprobs(-4.0, -0.02) > 0.95
    assert preference_from_logprobs(-0.02, -4.0) < 0.05
    assert preference_from_logprobs(-1.0, -1.0) == pytest.approx(0.5)
    # Exactly AlpacaEval's 2 - p(m)/(p(m)+p(M)), minus 1.
    lm, lM = math.log(0.3), math.log(0.1)  # the rest of the mass went to other tokens
    assert preference_from_logprobs(lm, lM) == pytest.approx(0.1 / 0.4)
    # A label absent from the top log-probabilities has probability 0.
    assert preference_from_logprobs(None, -3.0) == 1.0
    assert preference_from_logprobs(-3.0, -math.inf) == 0.0
    assert preference_from_logprobs(None, None) is None
    assert preference_from_logprobs(float("nan"), -1.0) is None
    # Far-apart values neither overflow nor lose the answer.
    assert preference_from_logprobs(0.0, -1000.0) == pytest.approx(0.0)
    assert preference_from_logprobs(-1000.0, 0.0) == pytest.approx(1.0)


# ---------------------------------------------------------------- position debiasing


def test_model_preference_undoes_the_order():
    assert model_preference("A", "A") == 1.0 and model_preference("A", "B") == 0.0
    assert model_preference("tie", "A") == 0.5
    assert model_preference(0.8, "B") == 0.8 and model_preference(0.8, "A") == pytest.approx(0.2)
    assert model_preference(None, "A") is None
    with pytest.raises(ValueError):
        model_preference(1.5, "A")


def test_combine_orders_verdicts():
    assert combine_orders("A", "B") == 1.0  # the model wins in both orders
    assert combine_orders("B", "A") == 0.0  # the baseline wins in both orders
    assert combine_orders("A", "A") == 0.5  # always the first slot: position, not quality
    assert combine_orders("B", "B") == 0.5
    assert combine_orders("tie", "tie") == 0.5
    assert combine_orders("A", "tie") == 0.5  # FastChat: disagreeing orders are a tie
    assert combine_orders("A", None) is None and combine_orders(None, "B") is None


def test_combine_orders_probabilities():
    # A judge with a constant +0.2 pull to slot B: the average cancels it.
    assert combine_orders(0.2 + 0.2, 0.8 + 0.2) == pytest.approx(0.8)
    assert combine_orders(0.0, 1.0) == 1.0
    assert combine_orders(0.5, 0.5) == 0.5


def test_position_bias_measures():
    consistent = [("A", "B"), ("B", "A"), ("tie", "tie")]
    biased = [("A", "A")] * 3
    mixed = [("A", "tie")]
    bias = position_bias(consistent + biased + mixed + [(None, "A")])
    assert bias.n == 7 and bias.unparsed == 1
    assert bias.follows_position == pytest.approx(3 / 7)
    assert bias.consistent == pytest.approx(3 / 7)
    # slot B scores: consistent 1+1+1, biased 0, mixed 0.5 -> 3.5 over 14 judgments
    assert bias.slot_b_rate == pytest.approx(3.5 / 14)

    fair = position_bias([("A", "B"), ("B", "A"), (0.1, 0.9)])
    assert fair == PositionBias(3, 0, 0.0, 1.0, 0.5)
    second_slot = position_bias([(0.9, 0.8)] * 4)
    assert second_slot.follows_position == 1.0 and second_slot.slot_b_rate == pytest.approx(0.85)
    empty = position_bias([(None, None)])
    assert empty.n == 0 and empty.unparsed == 1 and math.isnan(empty.follows_position)


# ---------------------------------------------------------------- MT-Bench prompts


def test_temperatures_and_reference_categories():
    assert REFERENCE_CATEGORIES == {"math", "reasoning", "coding"}
    assert CATEGORY_TEMPERATURES["writing"] == CATEGORY_TEMPERATURES["roleplay"] == 0.7
    assert all(CATEGORY_TEMPERATURES[c] == 0.0 for c in ("extraction", "math", "coding", "reasoning"))
    assert CATEGORY_TEMPERATURES["stem"] == CATEGORY_TEMPERATURES["humanities"] == 0.1
    assert generation_temperature("unknown") == 0.7


def test_judge_prompt_selection():
    assert judge_prompt_name("writing", 1) == "single-v1"
    assert judge_prompt_name("math", 1) == "single-math-v1"
    assert judge_prompt_name("coding", 2) == "single-math-v1-multi-turn"
    assert judge_prompt_name("stem", 2) == "single-v1-multi-turn"
    assert judge_prompt_name("reasoning", 1, "pairwise") == "pair-math-v1"
    assert judge_prompt_name("roleplay", 2, "pairwise") == "pair-v2-multi-turn"
    with pytest.raises(ValueError):
        judge_prompt_name("writing", 3)


def test_load_real_files(shared_data):
    questions = load_questions(shared_data / "mt-bench-questions.jsonl")
    assert len(questions) == 80 and all(len(q.turns) == 2 for q in questions)
    assert len({q.category for q in questions}) == 8
    prompts = load_judge_prompts(shared_data / "mt-bench-judge-prompts.jsonl")
    assert set(prompts) == {
        "pair-v2", "pair-v2-multi-turn", "pair-math-v1", "pair-math-v1-multi-turn",
        "single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn",
    }  # fmt: skip
    assert {p.output_format for p in prompts.values() if p.kind == "single"} == {"[[rating]]"}
    assert {p.output_format for p in prompts.values() if p.kind == "pairwise"} == {"[[A]]"}
    assert all(p.reference_based == ("math" in p.name) for p in prompts.values())
    assert len({p.version for p in prompts.values()}) == 8
    refs = load_references(shared_data / "mt-bench-reference-gpt4.jsonl")
    by_id = {q.question_id: q for q in questions}
    assert {by_id[i].category for i in refs} == REFERENCE_CATEGORIES
    assert set(refs) == {q.question_id for q in questions if q.category in REFERENCE_CATEGORIES}
    assert all(len(turns) == 2 for turns in refs.values())


@pytest.fixture(scope="module")
def mt_bench(shared_data):
    questions = {q.question_id: q for q in load_questions(shared_data / "mt-bench-questions.jsonl")}
    return (
        questions,
        load_judge_prompts(shared_data / "mt-bench-judge-prompts.jsonl"),
        load_references(shared_data / "mt-bench-reference-gpt4.jsonl"),
    )


def test_single_prompt_turn_1_general(mt_bench):
    questions, prompts, _ = mt_bench
    q = next(q for q in questions.values() if q.category == "writing")
    built = single_judge_messages(prompts, q, ["ANSWER-ONE {braces} stay"], turn=1)
    system, user = built.messages
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    assert user["role"] == "user"
    expected = f"[Question]\n{q.turns[0]}\n\n[The Start of Assistant's Answer]\nANSWER-ONE {{braces}} stay\n"
    assert expected in user["content"]
    assert q.turns[1] not in user["content"]
    assert built.template == "single-v1" and built.version == prompts["single-v1"].version


def test_single_prompt_turn_2_math_with_reference(mt_bench):
    questions, prompts, refs = mt_bench
    q = next(q for q in questions.values() if q.category == "math")
    built = single_judge_messages(prompts, q, ["FIRST", "SECOND"], turn=2, reference=refs[q.question_id])
    system, user = (m["content"] for m in built.messages)
    assert system == prompts["single-math-v1-multi-turn"].system_prompt
    ref1, ref2 = refs[q.question_id]
    for piece in (q.turns[0], q.turns[1], ref1, ref2, "### Assistant A:\nFIRST", "### Assistant A:\nSECOND"):
        assert piece in user
    # The conversation in order: question 1, answer 1, question 2, answer 2.
    conv = user.split("<|The Start of Assistant A's Conversation with User|>")[1]
    assert conv.index(q.turns[0]) < conv.index("FIRST") < conv.index(q.turns[1]) < conv.index("SECOND")
    with pytest.raises(ValueError, match="reference"):
        single_judge_messages(prompts, q, ["FIRST", "SECOND"], turn=2)
    with pytest.raises(ValueError, match="2 answer"):
        single_judge_messages(prompts, q, ["FIRST"], turn=2, reference=refs[q.question_id])


def test_pairwise_prompts(mt_bench):
    questions, prompts, refs = mt_bench
    q = next(q for q in questions.values() if q.category == "coding")
    built = pairwise_judge_messages(prompts, q, ["A1"], ["B1"], turn=1, reference=refs[q.question_id])
    system, user = (m["content"] for m in built.messages)
    assert built.template == "pair-math-v1" and system == prompts["pair-math-v1"].system_prompt
    assert "[The Start of Reference Answer]\n" + refs[q.question_id][0] in user
    assert user.index("Assistant A's Answer]\nA1") < user.index("Assistant B's Answer]\nB1")
    q = next(q for q in questions.values() if q.category == "humanities")
    built = pairwise_judge_messages(prompts, q, ["A1", "A2"], ["B1", "B2"], turn=2)
    user = built.messages[1]["content"]
    assert built.template == "pair-v2-multi-turn"
    for piece in ("### Assistant A:\nA1", "### Assistant A:\nA2", "### Assistant B:\nB1", "### Assistant B:\nB2"):
        assert piece in user
    assert user.count(q.turns[1]) == 2  # each assistant's conversation shows the second question
    assert "{" + "answer" not in user


def test_reference_ignored_for_general_categories():
    question = Question(1, "writing", ("Q1", "Q2"))
    prompts = {"single-v1": JudgePrompt("single-v1", "single", "sys", "{question}|{answer}", "[[rating]]")}
    built = single_judge_messages(prompts, question, ["ans"], turn=1, reference=["ref"])
    assert built.messages[1]["content"] == "Q1|ans"


# ---------------------------------------------------------------- AlpacaEval prompt


def test_alpaca_template_real_file(shared_data):
    template = load_alpaca_template(shared_data / "alpaca-eval-judge-prompt.txt")
    assert [role for role, _ in template.messages] == ["system", "user"]
    assert len(template.version) == 12
    messages = alpaca_judge_messages(template, "Name a colour. {output_2}", "FIRST <|im_start|>", "SECOND")
    system, user = messages
    assert system["role"] == "system" and "<|im_" not in system["content"]
    content = user["content"]
    assert '"instruction": """Name a colour. {output_2}""",' in content  # placeholders inside values stay as written
    first_at = content.index('"model_identifier": "m",\n        "output": """FIRST <|im_start|>"""')
    second_at = content.index('"model_identifier": "M",\n        "output": """SECOND"""')
    assert first_at < second_at
    assert content.endswith("## Best Model Identifier")
    assert "{output_1}" not in content and "{instruction}" not in content


def test_alpaca_template_version_follows_text():
    text = "<|im_start|>system\nS\n<|im_end|>\n<|im_start|>user\n{instruction} {output_1} {output_2}\n<|im_end|>"
    a, b = parse_alpaca_template(text), parse_alpaca_template(text.replace("S\n", "T\n"))
    assert a.version != b.version and a.version == parse_alpaca_template(text).version
    with pytest.raises(ValueError):
        parse_alpaca_template("no chatml here {instruction}")
    with pytest.raises(ValueError, match="output_2"):
        parse_alpaca_template("<|im_start|>user\n{instruction} {output_1}\n<|im_end|>")


def test_alpaca_switched_is_seeded_and_balanced():
    keys = [f"instruction {i}" for i in range(400)]
    draws = [alpaca_switched(k, seed=0) for k in keys]
    assert draws == [alpaca_switched(k, seed=0) for k in keys]
    assert 150 < sum(draws) < 250
    assert draws != [alpaca_switched(k, seed=1) for k in keys]
