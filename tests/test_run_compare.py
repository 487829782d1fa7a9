"""`alignflow runs` and `alignflow compare` on two real tiny evaluate runs that differ in one setting."""

import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from mlflow import MlflowClient
from PIL import Image

from flows.cli import main
from pipeline_lib import tracking
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError
from pipeline_lib.tracking.compare import compare_runs, compare_url, config_diff, list_runs, resolve_run
from pipeline_lib.tracking.runs import KIND_PIPELINE, TAG_KIND

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "configs" / "evaluate-tiny.yaml")
# Both generate (so their metrics differ), and nothing else in the config does.
SETTINGS = ("eval.max_new_tokens=8", "eval.max_new_tokens=6")
# Runs and stages of their own: a rerun of a config logs into its old parent
# run, and other tests expect to be the first to build the tiny suite's stages.
OWN = ("tracking.experiment=alignflow-run-compare-tests", "suite.n_eval=12")
OTHER_EXPERIMENT = "alignflow-compare-tests"
# Tests that read the two real runs: on one xdist worker, so that the module-scoped runs are made once.


@pytest.fixture(scope="module")
def two_runs(alignflow_home) -> list[str]:
    """The MLflow parent run ids of the two runs, made once for the module."""
    ids = []
    for setting in SETTINGS:
        assert main(["run", RECIPE, setting, *OWN]) == 0
        recipe = load_recipe(RECIPE, [setting, *OWN])
        ids.append(tracking.find_run(recipe.tracking.experiment, config_hash(recipe)))
    return ids


@pytest.fixture(scope="module")
def made_up_runs(alignflow_home) -> dict[str, str]:
    """Pipeline runs logged by hand in their own experiment: two with one name, one leaderboard-only."""
    experiment_id = tracking.configure(None, OTHER_EXPERIMENT)
    client = MlflowClient(tracking.default_tracking_uri())
    ids = {}
    for key, name in (("twin-a", "twin"), ("twin-b", "twin"), ("board", "compare-tiny-0123456789")):
        run = client.create_run(experiment_id, run_name=name, tags={TAG_KIND: KIND_PIPELINE})
        client.log_param(run.info.run_id, "method", "compare" if key == "board" else "evaluate")
        client.set_terminated(run.info.run_id)
        ids[key] = run.info.run_id
    client.log_metric(ids["board"], "leaderboard/sft/score", 0.25, step=0)
    return ids


def _section(out: str, title: str) -> list[str]:
    """The lines of one block of the compare output (blocks are separated by blank lines)."""
    block = next(b for b in out.split("\n\n") if b.startswith(title))
    return block.splitlines()[1:]


def _fails_in_one_line(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("alignflow: error: ") and captured.err.count("\n") == 1
    assert expected in captured.err and "Traceback" not in captured.err


@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_runs_lists_both_newest_first(capsys, two_runs):
    first, second = two_runs
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert out.index(second[:8]) < out.index(first[:8])

    summaries = {s.run_id: s for s in list_runs()}
    score = MlflowClient().get_metric_history(first, "eval/score")[-1].value
    assert summaries[first].method == "evaluate" and summaries[first].rounds == 1
    assert summaries[first].score == score and summaries[first].status == "FINISHED"

    assert main(["runs", "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # header and the newest run


@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_runs_of_one_experiment_and_of_an_empty_store(capsys, two_runs, made_up_runs, tmp_path):
    assert main(["runs", "--experiment", OTHER_EXPERIMENT]) == 0
    out = capsys.readouterr().out
    assert made_up_runs["board"][:8] in out and two_runs[0][:8] not in out

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["runs", "--tracking-uri", empty]) == 0
    assert capsys.readouterr().out.strip() == f"no pipeline runs in {empty}"


@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_compare_shows_the_differing_setting_metrics_by_round_a_plot_and_a_link(capsys, two_runs, tmp_path):
    first, second = two_runs
    plot = tmp_path / "compare.png"
    assert main(["compare", first, second[:8], "--plot", str(plot)]) == 0
    out = capsys.readouterr().out

    # Only the one setting that differs, with each run's value in its column.
    assert [line.split() for line in _section(out, "config differences:")[1:]] == [["eval.max_new_tokens", "8", "6"]]

    client = MlflowClient()
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in _section(out, "metrics by round:")[1:]}
    for metric in ("eval/score", "eval/pass_rate", "eval/length"):
        logged = [client.get_metric_history(run_id, metric)[-1].value for run_id in two_runs]
        assert [float(cell) for cell in rows[("0", metric)]] == pytest.approx(logged, rel=1e-3)
    assert rows[("0", "eval/length")] == ["8", "6"]  # the tiny model always uses its whole budget
    assert ("0", "eval/score/arithmetic") not in rows  # per family only with --all-metrics

    # The second run's score against the first's, prompt by prompt, with its interval (the same 12 prompts).
    [line] = [l for l in _section(out, "score against ") if l.startswith(client.get_run(second).info.run_name)]
    logged = [client.get_metric_history(run_id, "eval/score")[-1].value for run_id in two_runs]
    assert f"{logged[1] - logged[0]:+.3f} [" in line and line.endswith("(12 prompts)")

    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(plot) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    assert f"plot: {plot}" in out

    link = next(line for line in out.splitlines() if line.startswith("mlflow compare: "))
    assert "#/compare-runs?runs=" in link and first in link and second in link


@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_compare_by_name_and_with_every_metric(capsys, two_runs):
    first, second = two_runs
    name = MlflowClient().get_run(first).info.run_name
    comparison = compare_runs([name, second[:6]])
    assert [run.run_id for run in comparison.runs] == two_runs
    assert comparison.config_diff == {"eval.max_new_tokens": ["8", "6"]}

    assert main(["compare", name, second, "--all-metrics"]) == 0
    out = capsys.readouterr().out
    assert "eval/score/arithmetic" in out and "--all-metrics shows them" not in out
    # The default plot goes under the home, named after the runs.
    assert f"compare/{first[:8]}-{second[:8]}.png" in out


@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_compare_a_leaderboard_run_shows_its_leaderboard(capsys, two_runs, made_up_runs, tmp_path):
    assert main(["compare", two_runs[0], made_up_runs["board"], "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert _section(out, "leaderboard")[1].split() == ["leaderboard/sft/score", "-", "0.25"]
    assert "compare-tiny-0123456789 (" in out and "has no rounds logged on it" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["compare", "0123456789abcdef", "{first}"], "no pipeline run matches '0123456789abcdef'"),
        (["compare", "{first}"], "at least two runs, got 1"),
        (["compare", "{first}", "{first}"], "is given twice"),
        (["compare", "twin", "{first}"], "'twin' matches 2 pipeline runs"),
        (["compare", "{first}", "{second}", "--experiment", "nowhere"], "no experiment 'nowhere'"),
    ],
)
@pytest.mark.integration
@pytest.mark.xdist_group("run-compare")
def test_bad_arguments_fail_in_one_line(capsys, two_runs, made_up_runs, argv, expected):
    first, second = two_runs
    _fails_in_one_line(capsys, [arg.format(first=first, second=second) for arg in argv], expected)


def test_an_ambiguous_id_prefix_is_refused():
    candidates = [SimpleNamespace(info=SimpleNamespace(run_id=f"abcdef{n}0000", run_name=f"r{n}")) for n in (1, 2)]
    with pytest.raises(UserError, match="'abcdef' matches 2 pipeline runs"):
        resolve_run("abcdef", candidates, "sqlite:///x.db")
    assert resolve_run("abcdef2", candidates, "sqlite:///x.db") is candidates[1]
    with pytest.raises(UserError, match="no pipeline run matches 'abc'"):
        resolve_run("abc", candidates, "sqlite:///x.db")  # too short to be a prefix


def test_config_diff_keeps_only_keys_that_differ():
    configs = [{"a": "1", "b": "x", "c": "2"}, {"a": "1", "b": "y", "c": "2"}, {"a": "1", "b": "x", "d": "3"}]
    assert config_diff(configs) == {"b": ["x", "y", "x"], "c": ["2", "2", None], "d": [None, None, "3"]}
    assert config_diff([{"a": "1"}, {"a": "1"}]) == {}


def test_compare_url_is_the_mlflow_compare_page():
    url = compare_url("http://mlflow.example:5000/", ["2", "1", "2"], ["aaa", "bbb"])
    page, query = url.split("#/compare-runs?")
    assert page == "http://mlflow.example:5000/"
    fields = dict(part.split("=", 1) for part in query.split("&"))
    assert json.loads(unquote(fields["runs"])) == ["aaa", "bbb"]
    assert json.loads(unquote(fields["experiments"])) == ["1", "2"]
    assert compare_url("sqlite:////elsewhere/mlflow.db", ["1"], ["aaa", "bbb"]).startswith("MLFLOW_SERVER_")
