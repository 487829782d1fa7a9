"""An OpenAI-compatible judge endpoint (a real vLLM server behind an API key): its key is never written anywhere."""

from pathlib import Path

import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from flows.cli import main
from methods.recipe import load_recipe
from pipeline_lib import tracking
from pipeline_lib.config import config_hash
from pipeline_lib.models import resolve_model
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.sampling.vllm_server import POOL, SERVED_NAME, ModelToServe, ServerOptions

pytestmark = [
    pytest.mark.skipif(vllm_python() is None, reason="no vLLM environment: run `make setup-vllm`"),
    pytest.mark.integration,
    pytest.mark.xdist_group("vllm"),
    pytest.mark.usefixtures("shared_data"),
]

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
KEY = "sk-alignflow-test-4f9c1e07d2b85a36"
KEY_ENV = "ALIGNFLOW_TEST_JUDGE_KEY"


@pytest.fixture(scope="module")
def endpoint():
    """A vLLM server for the tiny model that refuses requests without the key."""
    server, _ = POOL.acquire(ModelToServe(resolve_model("tiny-llama")), ServerOptions(extra_args=("--api-key", KEY)), 0)
    try:
        yield f"{server.url}/v1"
    finally:
        POOL.release(server, 0)


def _settings(url: str, seed: int, *more: str) -> list[str]:
    return [
        "eval.benchmarks=[{name: suite}, {name: mt_bench, limit: 1, max_new_tokens: 4}, {name: pairwise, limit: 2, max_new_tokens: 4}]",
        f"eval.judge.base_url={url}", f"eval.judge.served_model_name={SERVED_NAME}", f"eval.judge.api_key_env={KEY_ENV}",
        "eval.judge.max_new_tokens=4", f"suite.seed={seed}", *more,
    ]  # fmt: skip


def test_endpoint_judge_runs_and_its_key_is_never_written(capsys, monkeypatch, endpoint, alignflow_home):
    monkeypatch.setenv(KEY_ENV, KEY)
    settings = _settings(endpoint, 11)
    out, states = run_recipe(capsys, RECIPE, *settings)
    assert states["mt-bench-judgments"] == ["Completed"] and states["pairwise-judgments"] == ["Completed"]
    recipe = load_recipe(RECIPE, settings)
    client = MlflowClient(tracking.default_tracking_uri())
    parent = client.get_run(tracking.find_run(recipe.tracking.experiment, config_hash(recipe)))
    (child,) = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    # Judged through the endpoint: each question's two turns, each prompt in both orders, every one counted.
    assert child.data.metrics["mt_bench/judgments"] == 2 and child.data.metrics["pairwise/judgments"] == 4
    assert parent.data.params["eval.judge.api_key_env"] == KEY_ENV
    # Not in any file under the home (stages, run folders, MLflow's database and artifacts, Prefect's), nor printed.
    leaks = [p for p in alignflow_home.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == [] and KEY not in out + capsys.readouterr().err


def test_wrong_key_and_wrong_model_are_one_line_errors(capsys, monkeypatch, endpoint):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    assert main(["run", RECIPE, *_settings(endpoint, 12)]) != 0
    err = capsys.readouterr().err
    assert "refused the API key" in err and KEY_ENV in err and "sk-wrong" not in err
    monkeypatch.setenv(KEY_ENV, KEY)
    assert main(["run", RECIPE, *_settings(endpoint, 12, "eval.judge.served_model_name=gpt-judge")]) != 0
    err = capsys.readouterr().err
    assert f"serves {SERVED_NAME}" in err and "'gpt-judge'" in err
