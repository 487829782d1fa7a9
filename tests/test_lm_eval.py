"""lm-evaluation-harness as a library call: the suite exported as an lm-eval task, run on tiny-llama.

Offline throughout: the task reads a local JSONL, the model is a local folder (conftest sets
HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). The vLLM test runs the same task through lm-eval's
``local-completions`` model against a server started by the project's pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline_lib.benchmarks.lm_eval_run import (
    DATA_FILE,
    RESULTS_FILE,
    SUITE_TASK,
    TASK_FILE,
    completions_url,
    export_suite_task,
    main_metric,
    run_lm_eval,
    task_metrics,
)
from pipeline_lib.core.errors import UserError
from pipeline_lib.data.items import ITEMS_FILE
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import read_items, write_suite_split

LIMIT = 4


@pytest.fixture(scope="module")
def items_dir(tmp_path_factory) -> Path:
    """The suite's eval split as the prepare-suite stage writes it (14 items, two of each family)."""
    folder = tmp_path_factory.mktemp("items")
    write_suite_split(SuiteConfig(n_eval=14, difficulty=[1]), "eval", folder)
    return folder


@pytest.fixture(scope="module")
def task_dir(items_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-task")
    assert export_suite_task(items_dir, folder) == SUITE_TASK
    return folder


@pytest.fixture(scope="module")
def hf_run(tiny_model, task_dir, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("lm-eval-hf")
    return run_lm_eval(tiny_model, [SUITE_TASK], out, include_path=str(task_dir), limit=LIMIT), out


def _samples(out: Path, task: str = SUITE_TASK) -> list[dict]:
    rows = [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda row: row["doc_id"])


def test_export_writes_the_items_with_one_right_answer_and_a_task_reading_them_by_absolute_path(items_dir, task_dir):
    items = read_items(items_dir)
    rows = [json.loads(line) for line in (task_dir / DATA_FILE).read_text().splitlines()]
    # Every eval item but the format family's, whose reference is one example of many right answers.
    expected = [(i.id, i.prompt, i.reference) for i in items if i.family != "format"]
    assert [(r["id"], r["prompt"], r["reference"]) for r in rows] == expected
    assert len(rows) == 12 and {"arithmetic", "sorting", "string_transform"} <= {r["family"] for r in rows}
    assert rows[0]["prompt"].startswith("Calculate 14 + 7") and rows[0]["reference"] == "21"

    config = yaml.safe_load((task_dir / TASK_FILE).read_text())
    data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data_file.is_absolute() and data_file == (task_dir / DATA_FILE).resolve()
    assert config["task"] == SUITE_TASK and config["output_type"] == "generate_until" and config["dataset_path"] == "json"
    assert (config["doc_to_text"], config["doc_to_target"]) == ("prompt", "reference")
    assert config["generation_kwargs"]["max_gen_toks"] == 32 and "\n" in config["generation_kwargs"]["until"]
    assert [m["metric"] for m in config["metric_list"]] == ["exact_match"]


def test_max_gen_toks_is_configurable_and_nothing_to_export_is_an_error(items_dir, tmp_path):
    export_suite_task(items_dir, tmp_path / "short", max_gen_toks=5)
    assert yaml.safe_load((tmp_path / "short" / TASK_FILE).read_text())["generation_kwargs"]["max_gen_toks"] == 5
    only_format = tmp_path / "format-only"
    only_format.mkdir()
    write_suite_split(SuiteConfig(n_eval=3, families=["format"]), "eval", only_format)
    with pytest.raises(UserError, match="no item has a single right answer"):
        export_suite_task(only_format, tmp_path / "empty")


def test_hf_run_scores_the_suite_task_and_writes_lm_evals_results(hf_run, items_dir):
    metrics, out = hf_run
    assert set(metrics) == {SUITE_TASK}
    name, value = main_metric(metrics[SUITE_TASK])
    assert name == "exact_match" and 0.0 <= value <= 1.0
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["results"][SUITE_TASK]["exact_match,none"] == value
    assert results["n-samples"][SUITE_TASK]["effective"] == LIMIT and results["config"]["model"] == "hf"
    samples = _samples(out)
    assert len(samples) == LIMIT
    # The prompt went through the model's chat template (ChatML), as the project's own evaluation does.
    first_prompt = samples[0]["arguments"][0][0]
    assert "<|im_start|>user\nCalculate 14 + 7. Answer with just the number.<|im_end|>" in first_prompt
    assert first_prompt.endswith("<|im_start|>assistant\n")
    assert [s["target"] for s in samples] == [i.reference for i in read_items(items_dir)[:LIMIT]]


def test_exact_match_counts_answers_equal_to_the_reference_up_to_case_and_spacing(hf_run, tiny_model, tmp_path):
    """References set to tiny-llama's own greedy answers: the metric is 1 where they match, not vacuously 0."""
    samples = _samples(hf_run[1])
    answers = [s["filtered_resps"][0] for s in samples]
    assert all(answer.strip() for answer in answers), "the test needs non-empty greedy answers"
    references = [answers[0], answers[1], f"  {answers[2].upper()} ", "not what it says"]
    items = tmp_path / "items"
    items.mkdir()
    rows = {
        "id": [f"q{i}" for i in range(LIMIT)],
        "prompt": [s["doc"]["prompt"] for s in samples],
        "reference": references,
    }
    pq.write_table(pa.Table.from_pydict(rows), items / ITEMS_FILE)  # the user's data: no verifier spec
    task = export_suite_task(items, tmp_path / "task")
    metrics = run_lm_eval(tiny_model, [task], tmp_path / "out", include_path=str(tmp_path / "task"))
    assert metrics[task]["exact_match"] == pytest.approx(0.75)
    assert [s["exact_match"] for s in _samples(tmp_path / "out")] == [1.0, 1.0, 1.0, 0.0]


def test_an_unknown_task_is_a_user_error_naming_it_and_the_include_path(tiny_model, task_dir, tmp_path):
    with pytest.raises(UserError) as caught:
        run_lm_eval(tiny_model, [SUITE_TASK, "no_such_task_xyz"], tmp_path, include_path=str(task_dir))
    message = str(caught.value)
    assert "'no_such_task_xyz'" in message and str(task_dir) in message and "\n" not in message
    assert not (tmp_path / RESULTS_FILE).exists()


def test_the_vllm_backend_needs_a_base_url(tiny_model, task_dir, tmp_path):
    with pytest.raises(UserError, match="needs base_url"):
        run_lm_eval(tiny_model, [SUITE_TASK], tmp_path, include_path=str(task_dir), backend="vllm")


def test_metric_names_keep_the_filter_and_the_main_metric_follows_the_documented_order():
    multiple_choice = task_metrics(
        {"alias": "arc", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6, "acc_norm_stderr,none": "N/A"}
    )
    assert multiple_choice == {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.6}
    assert main_metric(multiple_choice) == ("acc_norm", 0.6)
    assert main_metric({"acc": 0.5, "acc_stderr": 0.1}) == ("acc", 0.5)
    generative = task_metrics(
        {"exact_match,strict-match": 0.2, "exact_match_stderr,strict-match": 0.01, "exact_match,flexible-extract": 0.3}
    )
    assert generative == {
        "exact_match_strict-match": 0.2,
        "exact_match_stderr_strict-match": 0.01,
        "exact_match_flexible-extract": 0.3,
    }
    assert main_metric(generative) == ("exact_match_strict-match", 0.2)
    assert main_metric({"word_perplexity": 12.0, "bits_per_byte": 0.9}) == ("word_perplexity", 12.0)
    assert main_metric({"custom": 0.4}) == ("custom", 0.4)


def test_completions_url_accepts_a_servers_root_its_v1_or_the_endpoint():
    root = "http://127.0.0.1:8000"
    for given in (root, f"{root}/", f"{root}/v1", f"{root}/v1/completions"):
        assert completions_url(given) == f"{root}/v1/completions"


@pytest.mark.integration
@pytest.mark.xdist_group("vllm")  # with tests/test_vllm.py: two CPU vLLM servers at once each claim both cores
@pytest.mark.skipif(
    vllm_python() is None, reason="no vLLM environment (.venv-vllm or ALIGNFLOW_VLLM_PYTHON): run `make setup-vllm`"
)
def test_local_completions_against_vllm_gives_hfs_greedy_answers_and_score(hf_run, tiny_model, tiny_vllm, task_dir, tmp_path):
    metrics = run_lm_eval(
        tiny_model, [SUITE_TASK], tmp_path, include_path=str(task_dir), limit=LIMIT, backend="vllm", base_url=tiny_vllm.url
    )
    hf_metrics, hf_out = hf_run
    # Same float32 weights, same token ids in (tokenized here with the model's tokenizer), greedy:
    # the same answers, so the same score.
    assert [s["filtered_resps"] for s in _samples(tmp_path)] == [s["filtered_resps"] for s in _samples(hf_out)]
    assert metrics == hf_metrics
    config = json.loads((tmp_path / RESULTS_FILE).read_text())["config"]
    assert config["model"] == "local-completions" and config["model_args"]["base_url"] == f"{tiny_vllm.url}/v1/completions"
