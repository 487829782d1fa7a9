"""SEFT's file-level steps: reviser data from the suite and HH-RLHF, and choosing a round's targets."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from methods.seft.targets import TARGETS_FILE, select_targets
from pipeline_lib.data.config import DataConfig, DataSource
from pipeline_lib.data.prepare import ROWS_FILE, Budget, prepare_role
from pipeline_lib.models import load_tokenizer, resolve_model
from pipeline_lib.revision import parse_reviser_output
from pipeline_lib.revision.config import ReviserConfig
from pipeline_lib.revision.revise import REVISIONS_FILE, decision_report
from pipeline_lib.revision.reviser_data import ADAPTIVE_FILE, WARMUP_FILE, build_reviser_data
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import read_items, write_suite_split
from pipeline_lib.suite.scoring import SCORES_FILE
from pipeline_lib.training.rows import TRAIN_ROWS_FILE


def _prepared(tmp_path, source, limit=None) -> tuple:
    """``source`` as the prepare-data stage leaves data.preference: (its rows file, its report)."""
    out = tmp_path / "prepared"
    out.mkdir()
    tokenizer = load_tokenizer(resolve_model("tiny-llama"))
    report = prepare_role("preference", [DataSource(source=str(source), limit=limit)], DataConfig(), tokenizer,
                          Budget(prompt_tokens=4096, total_tokens=None), [], 0, out)  # fmt: skip
    return out / ROWS_FILE, report


def _hh(tmp_path, shared_data, limit=40):
    return _prepared(tmp_path, shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", limit)[0]


def test_hh_rlhf_through_the_reviser_data_stage(tmp_path, shared_data):
    reviser = ReviserConfig(n_prompts=0)
    out = tmp_path / "out"
    out.mkdir()
    report = build_reviser_data(None, _hh(tmp_path, shared_data), reviser, seed=0, folder=out)
    tmp_path = out

    source = report["sources"]["hh-rlhf-harmless-base-test"]
    assert source["rows_read"] == 40
    assert sum(source["decisions"].values()) == 80  # a kept and a revised example per pair
    assert all(report["decisions"][d] > 0 for d in ("none", "minor", "major"))
    assert len(set(report["decisions"].values())) == 1  # balanced

    warmup, adaptive = (pq.read_table(tmp_path / name).to_pylist() for name in (WARMUP_FILE, ADAPTIVE_FILE))
    assert len(warmup) == report["warmup_rows"] == source["decisions"]["minor"] + source["decisions"]["major"]
    assert all(parse_reviser_output(r["completion"][0]["content"]).decision != "none" for r in warmup)
    parsed = [parse_reviser_output(r["completion"][0]["content"]) for r in adaptive]
    assert [p.decision for p in parsed] == [r["decision"] for r in adaptive]
    # HH prompts are dialogues: the reviser sees the whole conversation.
    assert any("Assistant:" in r["prompt"][0]["content"] for r in adaptive)


def test_suite_scores_and_preference_pairs_are_combined(tmp_path, shared_data):
    scores = tmp_path / SCORES_FILE
    rows = [
        {"prompt_id": "p1", "sample_index": 0, "prompt": "Compute 2 + 2.", "response": "4", "reference": "4", "score": 1.0},
        {"prompt_id": "p1", "sample_index": 1, "prompt": "Compute 2 + 2.", "response": "5", "reference": "4", "score": 0.0},
        {"prompt_id": "p2", "sample_index": 0, "prompt": "Sort 2, 1.", "response": "1, 2, 3", "reference": "1, 2", "score": 0.7},
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), scores)
    reviser = ReviserConfig(tau_none=0.1, tau_major=0.5, balance_ratio=0)
    out = tmp_path / "out"
    out.mkdir()
    report = build_reviser_data(scores, _hh(tmp_path, shared_data, 10), reviser, seed=0, folder=out)
    assert report["sources"]["suite"]["decisions"] == {"none": 1, "minor": 1, "major": 1}
    assert report["adaptive_rows"] == 3 + 20  # balancing is off


def _revisions(tmp_path, items):
    rows = []
    cases = [("none", None, None), ("minor", "fixed", None), ("major", "rewritten", None), (None, None, "no-decision")]
    for index, (item, (decision, revision, malformed)) in enumerate(zip(items, cases, strict=False)):
        enhanced = None if malformed else (item.reference if decision == "none" else revision)
        rows.append(
            {
                "prompt_id": item.id,
                "sample_index": 0,
                "prompt": item.prompt,
                "response": item.reference,
                "reviser_output": "...",
                "decision": decision,
                "revision": revision,
                "malformed": malformed,
                "enhanced": enhanced,
            }
        )
    folder = tmp_path / "revise"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / REVISIONS_FILE)
    return folder / REVISIONS_FILE, rows


@pytest.mark.parametrize(
    "accepted, expected", [(["none"], {"none"}), (["none", "minor"], {"none", "minor"}), (["none", "minor", "major"], {"none", "minor", "major"})]
)
def test_targets_follow_the_rounds_accepted_decisions(tmp_path, accepted, expected):
    items_dir = tmp_path / "items"
    items_dir.mkdir()
    write_suite_split(SuiteConfig(n_train=4, difficulty=[1]), "train", items_dir)
    revisions_file, rows = _revisions(tmp_path, read_items(items_dir))
    out = tmp_path / "targets"
    out.mkdir()
    report = select_targets(items_dir, revisions_file, accepted, out)

    targets = pq.read_table(out / TARGETS_FILE).to_pylist()
    kept = {t["decision"] for t in targets if t["accepted"]}
    assert kept == expected and report["accepted"] == len(expected)
    assert not any(t["accepted"] for t in targets if t["decision"].startswith("malformed"))
    train = pq.read_table(out / TRAIN_ROWS_FILE).to_pylist()
    assert [r["completion"][0]["content"] for r in train] == [t["target"] for t in targets if t["accepted"]]
    # A `none` keeps the policy's own answer (here the reference, so its score is 1).
    none = next(t for t in targets if t["decision"] == "none")
    assert none["target"] == none["response"] and none["target_score"] == 1.0
    assert decision_report(rows) == {
        "decisions": {"none": 1, "minor": 1, "major": 1},
        "malformed": 1,
        "malformed_reasons": {"no-decision": 1},
    }


def test_the_reviser_learns_from_the_pairs_preparation_kept_which_counted_the_rest(tmp_path):
    import json

    source = tmp_path / "pairs.jsonl"
    rows = [{"chosen": "Human: hi\n\nAssistant: hello", "rejected": "Human: hi\n\nAssistant: go away"}] * 3
    rows += [{"chosen": "Human: hi\n\nAssistant: same", "rejected": "Human: hi\n\nAssistant: same"}, {"chosen": 5}]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    rows_file, prepared = _prepared(tmp_path, source)
    skipped = {reason: entry["count"] for reason, entry in prepared["skipped"].items()}
    assert prepared["kept"] == 1 and sum(skipped.values()) == 4 and skipped["duplicate id"] == 2  # ids hash the content
    out = tmp_path / "out"
    out.mkdir()
    report = build_reviser_data(None, rows_file, ReviserConfig(n_prompts=0), seed=0, folder=out)
    assert report["sources"]["pairs"]["rows_read"] == 1 and report["skipped_rows"] == {}
