"""HH-RLHF (real shared data) through the whole reviser-data path."""

from collections import Counter

import pytest

from pipeline_lib.data import load_rows
from pipeline_lib.revision import (
    balance_decisions,
    decision_counts,
    examples_from_preference,
    parse_reviser_output,
    render_dialogue,
    to_chat_rows,
)

N_PAIRS = 200


@pytest.fixture(scope="module")
def hh_rows(shared_data) -> list[dict]:
    result = load_rows(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "preference", limit=N_PAIRS)
    return result.rows.to_list()


def test_hh_pairs_become_balanced_parseable_reviser_rows(hh_rows: list[dict]) -> None:
    skipped: Counter[str] = Counter()
    # HH has no scores and its two replies are mostly unrelated texts (median
    # similarity ~0.25), so 0.4 rather than the default 0.6 gives a real minor class.
    examples = examples_from_preference(hh_rows, 0.05, 0.5, source="hh-rlhf", similar_ratio=0.4, skipped=skipped)
    assert len(examples) == 2 * (N_PAIRS - sum(skipped.values()))
    assert all(ex.target == ex.response for ex in examples if ex.decision == "none")
    assert all(ex.target != ex.response for ex in examples if ex.decision != "none")

    balanced = balance_decisions(examples, seed=0)
    counts = decision_counts(balanced)
    assert min(counts.values()) > 0 and len(set(counts.values())) == 1

    rows = to_chat_rows(balanced)
    for row, example in zip(rows, balanced, strict=True):
        parsed = parse_reviser_output(row["completion"][0]["content"], finish_reason="stop")
        assert (parsed.decision, parsed.revision) == (row["decision"], example.target.strip())
        assert row["source"] == "hh-rlhf"

    multi_turn = [(row, ex) for row, ex in zip(rows, balanced) if isinstance(ex.prompt, list)]
    assert multi_turn, "HH-RLHF has multi-turn dialogues"
    for row, example in multi_turn:
        assert len(example.prompt) > 1
        assert render_dialogue(example.prompt) in row["prompt"][0]["content"]
        assert example.prompt[-1]["content"] in row["prompt"][0]["content"]


def test_hh_default_similarity_labels_most_rejected_replies_major(hh_rows: list[dict]) -> None:
    counts = decision_counts(examples_from_preference(hh_rows, 0.05, 0.5, source="hh-rlhf"))
    assert counts["none"] == N_PAIRS
    assert 0 < counts["minor"] < counts["major"]
