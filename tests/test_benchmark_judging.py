"""Judging in resumable shards, MT-Bench's and the pairwise benchmark's metrics, and the recipe's benchmark entries."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_lib.benchmarks import mt_bench, pairwise
from pipeline_lib.benchmarks.judge import Choice
from pipeline_lib.benchmarks.judging import JudgeRequest, judge_all
from pipeline_lib.benchmarks.prompts import ALPACA_LABELS, parse_alpaca_template
from pipeline_lib.data.config import DataSource
from pipeline_lib.data.items import PromptItem
from pipeline_lib.suite.config import EvalConfig


class CountingJudge:
    """A stand-in for a judge model: answers from a fixed rule and counts what it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def generate(self, conversations):
        self.asked += len(conversations)
        return [f"fine. Rating: [[{len(c[-1]['content']) % 10 + 1}]]" for c in conversations]

    def choose(self, conversations, labels, prefixes=None):
        self.asked += len(conversations)
        return [Choice({label: -float(i + 1) for i, label in enumerate(labels)}, labels[0]) for _ in conversations]

    def close(self):
        pass


def _requests(n: int, version: str = "v1") -> list[JudgeRequest]:
    return [JudgeRequest([{"role": "user", "content": "q" * (i + 1)}], version) for i in range(n)]


def test_judge_all_resumes_from_finished_shards_and_rejudges_only_changes(tmp_path):
    judge, identity = CountingJudge(), {"model": "abc"}
    records, counts = judge_all(judge, identity, _requests(70), tmp_path)
    assert counts == {"judged": 70, "reused": 0} and judge.asked == 70 and len(records) == 70
    assert records[3]["text"] == "fine. Rating: [[5]]"

    # A rerun asks nothing; a lost shard is judged again, and only it.
    (tmp_path / "shard-00001.jsonl").unlink()
    again, counts = judge_all(judge, identity, _requests(70), tmp_path)
    assert counts == {"judged": 32, "reused": 38} and judge.asked == 102 and again == records
    # A corrupt shard is not trusted.
    (tmp_path / "shard-00000.jsonl").write_text("{not json\n")
    assert judge_all(judge, identity, _requests(70), tmp_path)[1] == {"judged": 32, "reused": 38}
    # Another judge, or another template version, changes every key: everything is judged again.
    assert judge_all(judge, {"model": "other"}, _requests(70), tmp_path)[1] == {"judged": 70, "reused": 0}
    assert judge_all(judge, identity, _requests(70, "v2"), tmp_path)[1] == {"judged": 70, "reused": 0}


def _graded(rating_texts: list[str]) -> list[dict]:
    rows = [{"question_id": 80 + i // 2, "category": ["writing", "math"][i // 2 % 2], "turn": i % 2 + 1} for i in range(len(rating_texts))]
    return mt_bench.graded_rows(rows, [{"text": t} for t in rating_texts])


def test_mt_bench_metrics_count_failures_instead_of_averaging_zeros():
    graded = _graded(["[[8]]", "Rating: [7]", "no idea", "[[4]]"])
    metrics = mt_bench.mt_bench_metrics(graded)
    assert metrics["mt_bench/score"] == pytest.approx((8 + 7 + 4) / 3)
    assert metrics["mt_bench/parse_failures"] == 1 and metrics["mt_bench/unrated"] == 1
    assert metrics["mt_bench/score_turn1"] == 8.0 and metrics["mt_bench/score_turn2"] == 5.5
    assert metrics["mt_bench/category/writing"] == 7.5 and metrics["mt_bench/category/math"] == 4.0


def test_mt_bench_fallback_reads_the_likeliest_rating_and_tells_1_from_10():
    graded = _graded(["[[8]]", "garbage", "more garbage", "still garbage"])
    requests = _requests(4)
    asked = mt_bench.fallback_requests(graded, requests)
    assert [i for i, _ in asked] == [1, 2, 3] and asked[0][1].prefix == "garbage\n\nRating: [["
    assert asked[0][1].labels == tuple("123456789") and asked[0][1].key({}) != requests[1].key({})
    low = {d: -5.0 for d in "123456789"}
    firsts = [
        {"logprobs": low | {"7": -0.2}},  # a plain 7
        {"logprobs": low | {"1": -0.1, "9": -3.0}},  # "1" wins: then "]]" or "0" decides between 1 and 10
        {"logprobs": low | {"1": -0.5, "9": -0.7}},  # "1" ahead only with 10's share: 9 wins once it is split
    ]
    pending = mt_bench.apply_fallback(graded, asked, firsts)
    assert graded[1]["rating"] == 7.0 and [i for i, _, _ in pending] == [2, 3]
    assert pending[0][1].prefix.endswith("Rating: [[1") and pending[0][1].labels == ("]]", "0")
    mt_bench.apply_ten(graded, pending, [{"logprobs": {"]]": -2.0, "0": -0.2}}, {"logprobs": {"]]": -0.69, "0": -0.69}}])
    assert graded[2]["rating"] == 10.0 and graded[3]["rating"] == 9.0
    metrics = mt_bench.mt_bench_metrics(graded)
    assert metrics["mt_bench/parse_failures"] == 3 and metrics["mt_bench/fallback_ratings"] == 3
    assert metrics["mt_bench/score"] == (8 + 7 + 10 + 9) / 4


TEMPLATE = parse_alpaca_template(
    "<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\n{instruction}\nm: {output_1}\nM: {output_2}<|im_end|>"
)


def _items(n: int) -> list[PromptItem]:
    return [PromptItem(f"p{i}", f"task {i}", [{"role": "user", "content": f"task {i}"}], "", "") for i in range(n)]


def test_pairwise_orders_and_preferences_from_logprobs_and_verdicts():
    items = _items(3)
    model = {f"p{i}": "m" * (10 + i) for i in range(3)}
    base = {f"p{i}": "b" * 20 for i in range(2)}  # p2 has no baseline output: not judged
    pairs = pairwise.pairwise_requests(TEMPLATE, items, model, base, "both", "logprobs", 0)
    assert [(row["prompt_id"], row["model_slot"]) for row, _ in pairs] == [("p0", "A"), ("p0", "B"), ("p1", "A"), ("p1", "B")]
    first, second = pairs[0][1].messages[1]["content"], pairs[1][1].messages[1]["content"]
    assert first.index("m: mmm") < first.index("M: bbb") and second.index("m: bbb") < second.index("M: mmm")
    assert pairs[0][1].labels == ALPACA_LABELS

    # p0: the judge always prefers slot B (position bias): averaged, the prompt is a tie.
    # p1: the judge prefers the model in both orders.
    records = [
        {"text": "M", "logprobs": {"m": -3.0, "M": -0.05}},
        {"text": "M", "logprobs": {"m": -3.0, "M": -0.05}},
        {"text": "m", "logprobs": {"m": -0.01, "M": -5.0}},
        {"text": "M", "logprobs": {"m": -5.0, "M": -0.01}},
    ]
    judged = pairwise.judged_rows([row for row, _ in pairs], records)
    prefs = pairwise.prompt_preferences(judged)
    assert prefs["p0"] == pytest.approx(0.5) and prefs["p1"] > 0.99
    metrics = pairwise.pairwise_metrics(judged, "pairwise")
    assert metrics["pairwise/win_rate"] == pytest.approx((prefs["p0"] + prefs["p1"]) / 2)
    assert metrics["pairwise/position_follows"] == 0.5 and metrics["pairwise/parse_failures"] == 0
    assert metrics["pairwise/model_length"] == 10.5 and metrics["pairwise/baseline_length"] == 20

    # Parsed labels follow FastChat: a win in one order and a loss in the other is a tie; an unparsed order drops the prompt.
    verdicts = pairwise.judged_rows([row for row, _ in pairs], [{"text": t, "logprobs": None} for t in ("m", "m", "m", "??")])
    assert pairwise.prompt_preferences(verdicts) == {"p0": 0.5, "p1": None}
    counted = pairwise.pairwise_metrics(verdicts, "pairwise")
    assert counted["pairwise/parse_failures"] == 1 and counted["pairwise/win_rate"] == 0.5


def test_pairwise_random_order_is_seeded_by_prompt():
    slots = [pairwise.model_slots(f"p{i}", "random", 0) for i in range(40)]
    assert slots == [pairwise.model_slots(f"p{i}", "random", 0) for i in range(40)]
    assert {s for (s,) in slots} == {"A", "B"}


def test_baseline_outputs_join_by_prompt_text_and_count_the_missing(tmp_path):
    source = tmp_path / "baseline.jsonl"
    source.write_text("".join(json.dumps({"instruction": f"task {i}", "output": f"answer {i}"}) + "\n" for i in (0, 2)))
    counts = pairwise.baseline_samples(DataSource(source=str(source), columns={"prompt": "instruction", "response": "output"}), _items(3), tmp_path / "s.parquet")
    assert counts == {"baseline_rows": 2, "prompts_without_baseline": 1}
    assert pairwise.texts(tmp_path / "s.parquet") == {"p0": "answer 0", "p2": "answer 2"}


@pytest.mark.parametrize(
    ("eval_section", "message"),
    [
        ({"benchmarks": [{"name": "mt_bench"}], "judge": {"model": "tiny-llama"}}, "must keep {name: suite}"),
        ({"benchmarks": [{"name": "suite"}, {"name": "pairwise"}]}, "need a judge"),
        ({"benchmarks": [{"name": "suite"}, {"name": "pairwise"}, {"name": "pairwise"}], "judge": {"model": "x"}}, "more than once"),
        ({"judge": {"model": "x", "base_url": "http://127.0.0.1:1/v1"}}, "not both"),
        ({"judge": {"base_url": "http://127.0.0.1:1/v1"}}, "needs served_model_name"),
        ({"judge": {"model": "x", "api_key_env": "KEY"}}, "go with base_url"),
        ({"benchmarks": [{"name": "suite"}, {"name": "mmlu"}]}, "mmlu"),
    ],
)
def test_benchmark_entries_are_checked(eval_section, message):
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        EvalConfig.model_validate(eval_section)


def test_unset_benchmarks_keep_the_suite_alone():
    assert [e.name for e in EvalConfig().entries()] == ["suite"]
    labelled = EvalConfig.model_validate(
        {"benchmarks": [{"name": "suite"}, {"name": "pairwise"}, {"name": "pairwise", "label": "vs_round0", "baseline": {"model": "round0"}}],
         "judge": {"model": "x"}}
    )  # fmt: skip
    assert [getattr(e, "prefix", e.name) for e in labelled.entries()] == ["suite", "pairwise", "pairwise_vs_round0"]


def test_the_commented_benchmark_blocks_of_the_smollm2_recipes_are_valid(tmp_path):
    from methods.recipe import load_recipe

    recipes = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    with_block = [p for p in recipes if "#   benchmarks:" in p.read_text()]
    assert len(with_block) >= 9
    for path in with_block:
        text = path.read_text().replace("#   benchmarks:", "  benchmarks:").replace("#     - ", "    - ").replace("#   judge:", "  judge:")
        (tmp_path / path.name).write_text(text)
        recipe = load_recipe(tmp_path / path.name)
        assert [e.name for e in recipe.eval.entries()] == ["suite", "mt_bench", "pairwise", "lm_eval"], path.name
        assert recipe.eval.judge.model == "smollm2-135m-instruct"


def test_leaderboard_has_a_column_per_benchmark_with_its_change_and_interval(tmp_path):
    from methods.compare.leaderboard import leaderboard_markdown, leaderboard_row

    start = {"eval/score": 0.30, "eval/pass_rate": 0.2, "eval/length": 30.0, "mt_bench/score": 3.0, "pairwise/win_rate": 0.10}
    final = {
        "eval/score": 0.32, "eval/pass_rate": 0.21, "eval/length": 31.0,
        "mt_bench/score": 3.5, "mt_bench/delta": 0.5, "mt_bench/delta_low": 0.1, "mt_bench/delta_high": 0.9,
        "pairwise/win_rate": 0.12, "pairwise/lc_win_rate": 0.15,
        "pairwise/delta": 0.02, "pairwise/delta_low": -0.03, "pairwise/delta_high": 0.07,
        "pairwise/judgments": 16.0,
    }  # fmt: skip
    row = leaderboard_row("seft", final, tmp_path)
    assert row["benchmarks"] == {"mt_bench/score": 3.5, "pairwise/lc_win_rate": 0.15, "pairwise/win_rate": 0.12}
    header, rule, first, line = leaderboard_markdown([row], start).splitlines()
    assert header.endswith("| mt_bench/score | pairwise/lc_win_rate | pairwise/win_rate |")
    assert first.endswith("| 3.000 | – | 0.100 |")
    assert "3.500 (+0.500 [+0.100, +0.900])" in line and "0.120 (+0.020 [-0.030, +0.070] within noise)" in line
    assert "| 0.150 |" in line


def test_cel_refuses_benchmarks_it_would_not_run():
    from methods.recipe import load_recipe
    from pipeline_lib.core.errors import UserError

    recipe = Path(__file__).resolve().parents[1] / "configs" / "cel-frozenlake-tiny.yaml"
    with pytest.raises(UserError, match="not used by cel"):
        load_recipe(recipe, ["eval.benchmarks=[{name: suite}]"])
