"""Every method on the user's data, end to end at tiny size on the shared HH-RLHF and MT-Bench files."""

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from flows.cli import main
from methods.recipe import load_recipe
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.data.prepare import ROWS_FILE, read_rows
from pipeline_lib.store import read_manifest
from pipeline_lib.training.rows import TRAIN_ROWS_FILE
from tasks.sampling import SAMPLES_FILE
from tasks.stage import DECLARED

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _recipe(name: str) -> str:
    return str(REPO / "configs" / f"{name}.yaml")


def _run_dir(home: Path, recipe: str, overrides: list[str]) -> Path:
    parsed = load_recipe(recipe, overrides)
    return home / "runs" / f"{parsed.name}-{config_hash(parsed)[:10]}"


@pytest.fixture
def hh_rlhf(shared_data) -> Path:
    return shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"


def test_dpo_trains_on_the_users_pairs_and_mlflow_shows_the_dataset(capsys, alignflow_home, hh_rlhf):
    overrides = [f"data.preference.source={hh_rlhf}", "data.preference.limit=64", "train.max_length=256"]
    out, states = run_recipe(capsys, _recipe("dpo-tiny"), *overrides)
    assert "sample-policy" not in states  # offline: the pairs are given
    run_dir = _run_dir(alignflow_home, _recipe("dpo-tiny"), overrides)
    prepared = run_dir / "shared" / "prepare-data-preference"
    report = json.loads((prepared / "report.json").read_text())
    assert report["read"] == 64 and 0 < report["kept"] <= 64 and report["sources"][0]["format"] == "hh-rlhf"

    # The pairs trained on are HH-RLHF's own, as prepared.
    trained = pq.read_table(run_dir / "round-1" / "build-training-rows" / TRAIN_ROWS_FILE).to_pylist()
    given = read_rows(prepared / ROWS_FILE)
    assert [(r["chosen"], r["rejected"]) for r in trained] == [(r["chosen"], r["rejected"]) for r in given]
    hh_chosen = {json.loads(line)["chosen"] for line in gzip.open(hh_rlhf, "rt")}
    assert all(any(r["chosen"] in dialogue for dialogue in hh_chosen) for r in trained[:5])
    assert read_manifest(run_dir / "round-1" / "train-policy")["train"]["rows"] == len(given)

    client = MlflowClient(tracking.default_tracking_uri())
    parent = client.get_run(tracking.find_run("alignflow-tests", config_hash(load_recipe(_recipe("dpo-tiny"), overrides))))
    inputs = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    dataset = inputs["data-preference"]
    assert dataset.dataset.digest and str(hh_rlhf.resolve()) in dataset.dataset.source
    assert {tag.key: tag.value for tag in dataset.tags}["mlflow.data.context"] == "preference"
    # The run that trained on the pairs has them as an input too, under the same digest.
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    round_1 = next(run for run in children if run.data.tags.get("alignflow.round") == "1")
    trained_on = {d.dataset.name: d.dataset.digest for d in round_1.inputs.dataset_inputs}
    assert trained_on["data-preference"] == dataset.dataset.digest
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "data/preference")}
    assert {"data/preference/report.json", "data/preference/token_lengths.png"} <= artifacts
    assert f"data.preference: kept {report['kept']} of 64 rows read" in out


def test_sft_learns_every_assistant_turn_of_multi_turn_dialogues(capsys, alignflow_home):
    _, states = run_recipe(capsys, _recipe("sft-hh-tiny"))
    run_dir = _run_dir(alignflow_home, _recipe("sft-hh-tiny"), [])
    rows = read_manifest(run_dir / "round-1" / "build-training-rows")
    assert rows["multi_turn"] > 0 and states["train-policy"] == ["Completed"]
    trained = pq.read_table(run_dir / "round-1" / "build-training-rows" / TRAIN_ROWS_FILE).to_pylist()
    assert all(row["messages"][-1]["role"] == "assistant" for row in trained)
    assert read_manifest(run_dir / "round-1" / "train-policy")["train"]["rows"] == rows["rows"]


def test_spin_pairs_the_users_real_answers_with_its_own_samples(capsys, alignflow_home, shared_data, tmp_path):
    sft = tmp_path / "sft.jsonl"
    references = {json.loads(line)["question_id"]: json.loads(line) for line in open(shared_data / "mt-bench-reference-gpt4.jsonl")}
    questions = [json.loads(line) for line in open(shared_data / "mt-bench-questions.jsonl")]
    rows = [{"id": q["question_id"], "prompt": q["turns"][0], "response": references[q["question_id"]]["choices"][0]["turns"][0]}
            for q in questions if q["question_id"] in references][:8]  # fmt: skip
    sft.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = [f"data.sft.source={sft}", "spin.iterations=1", "train.max_length=1024"]
    run_recipe(capsys, _recipe("spin-tiny"), *overrides)
    run_dir = _run_dir(alignflow_home, _recipe("spin-tiny"), overrides)
    pairs = pq.read_table(run_dir / "round-1" / "build-training-rows" / "pairs.parquet").to_pylist()
    kept = {str(row["id"]): row for row in rows}
    assert pairs and all(pair["chosen"] == kept[pair["prompt_id"]]["response"] for pair in pairs)
    samples = pq.read_table(run_dir / "round-1" / "sample-policy" / SAMPLES_FILE).to_pylist()
    assert {s["prompt_id"] for s in samples} == {pair["prompt_id"] for pair in pairs}


def test_figa_trains_on_the_users_revisions(capsys, alignflow_home, tmp_path):
    revisions = tmp_path / "revisions.jsonl"
    rows = [{"prompt": f"Fix: 'teh cat {i}'", "original": f"teh cat {i}", "revised": f"the cat {i}"} for i in range(6)]
    revisions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = [f"data.revisions.source={revisions}", "figa.revised_from=data"]
    _, states = run_recipe(capsys, _recipe("figa-tiny"), *overrides)
    assert "sample-policy" not in states and states["train-policy"] == ["Completed"]
    trained = pq.read_table(_run_dir(alignflow_home, _recipe("figa-tiny"), overrides) / "round-1" / "build-training-rows" / TRAIN_ROWS_FILE)
    assert trained.to_pylist()[0] == {"prompt": [{"role": "user", "content": "Fix: 'teh cat 0'"}], "original": "teh cat 0", "revised": "the cat 0"}


# Their reviser is seft-tiny's: on the seft-tiny group's worker, which trains it once for all of them.
SEFT_DATA = pytest.mark.xdist_group("seft-tiny")


@SEFT_DATA
def test_seft_samples_mt_bench_prompts_in_its_round(capsys, alignflow_home, shared_data):
    questions = shared_data / "mt-bench-questions.jsonl"
    overrides = [f"data.prompts.source={questions}", "seft.rounds=1"]  # new prompts each round: the HH test below
    run_recipe(capsys, _recipe("seft-tiny"), *overrides)
    run_dir = _run_dir(alignflow_home, _recipe("seft-tiny"), overrides)
    question_ids = {str(json.loads(line)["question_id"]) for line in open(questions)}
    first_turns = {json.loads(line)["turns"][0] for line in open(questions)}
    samples = pq.read_table(run_dir / "round-1" / "sample-policy" / SAMPLES_FILE).to_pylist()
    assert {s["prompt_id"] for s in samples} <= question_ids and len({s["prompt_id"] for s in samples}) == 12
    revisions = pq.read_table(run_dir / "round-1" / "revise" / "revisions.parquet").to_pylist()
    assert {r["prompt"] for r in revisions} <= first_turns


@SEFT_DATA
def test_seft_pool_samples_answer_hh_rlhf_prompts_in_their_dialogues(capsys, alignflow_home, hh_rlhf):
    run_recipe(capsys, _recipe("seft-hh-tiny"))
    run_dir = _run_dir(alignflow_home, _recipe("seft-hh-tiny"), [])
    prepared = {row["id"]: row for row in read_rows(run_dir / "shared" / "prepare-data-prompts" / ROWS_FILE)}
    transcripts = [json.loads(line)["chosen"] for line in gzip.open(hh_rlhf, "rt")][:24]
    for k, (start, stop) in ((1, (0, 12)), (2, (12, 24))):
        pool = pq.read_table(run_dir / f"round-{k}" / "take-prompts-pool" / "items.parquet").to_pylist()
        assert [row["id"] for row in pool] == list(prepared)[start:stop]
        samples = pq.read_table(run_dir / f"round-{k}" / "sample-policy" / SAMPLES_FILE).to_pylist()
        assert {s["prompt_id"] for s in samples} == {row["id"] for row in pool}
        for row in pool:
            # The last user turn of an HH-RLHF dialogue, asked with the turns before it.
            assert row["messages"][-1]["role"] == "user" and row["prompt"] in transcripts[prepared[row["id"]]["source_row"]]
    targets = pq.read_table(run_dir / "round-1" / "select-targets" / "targets.parquet").to_pylist()
    assert targets and all(t["response_score"] is None for t in targets)  # no verifier for the user's prompts


def test_one_changed_byte_rebuilds_prepare_data_and_what_follows_an_unchanged_source_reuses_all(capsys, tmp_path, hh_rlhf):
    source = tmp_path / "pairs.jsonl"
    pairs = [json.loads(line) for line in gzip.open(hh_rlhf, "rt")][:12]
    source.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    overrides = [f"data.preference.source={source}", "train.max_length=512"]
    run_recipe(capsys, _recipe("dpo-tiny"), *overrides)
    _, again = run_recipe(capsys, _recipe("dpo-tiny"), *overrides)
    assert {state for name, runs in again.items() if name in DECLARED for state in runs} == {"Cached"}

    # One byte more at the end of the first pair's chosen reply. (Spacing that parsing strips would rebuild
    # prepare-data only: the same rows, so the training rows and the model after them are reused.)
    pairs[0]["chosen"] += "!"
    source.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    _, changed = run_recipe(capsys, _recipe("dpo-tiny"), *overrides)
    for stage in ("prepare-data", "build-training-rows", "train-policy"):
        assert changed[stage] == ["Completed"], stage
    assert set(changed["prepare-suite"]) == {"Cached"}


def test_a_role_the_method_does_not_read_exits_2_naming_it(capsys):
    assert main(["run", _recipe("sft-tiny"), "data.preference.source=x.jsonl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("data.preference is not read by method 'sft' (it reads data.sft)")


def test_a_missing_file_exits_2_before_anything_runs(capsys, tmp_path):
    assert main(["run", _recipe("dpo-tiny"), f"data.preference.source={tmp_path / 'nope.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert "data.preference.source" in err and "nope.jsonl does not exist" in err and "Traceback" not in err


def test_a_model_without_a_chat_template_names_the_setting_and_the_setting_works(capsys, tmp_path):
    from pipeline_lib.models import resolve_model

    bare = tmp_path / "bare-model"
    shutil.copytree(resolve_model("tiny-llama"), bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    template = config.pop("chat_template", None) or (bare / "chat_template.jinja").read_text()
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    own = ["suite.seed=13"]  # items no other test uses: no other evaluate-tiny run finds its stages cached
    assert main(["run", _recipe("evaluate-tiny"), f"model.ref={bare}", *own]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "has no chat template: set model.chat_template in the recipe" in err[-1]

    template_file = tmp_path / "template.jinja"
    template_file.write_text(template)
    _, states = run_recipe(capsys, _recipe("evaluate-tiny"), f"model.ref={bare}", f"model.chat_template={template_file}", *own)
    assert states["set-chat-template"] == ["Completed"] and states["generate-answers"] == ["Completed"]
