"""CEL end to end on the tiny model (real Prefect, real MLflow), its recipe section, and its resumption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pyarrow.parquet as pq
import pytest
from flow_runs import run_recipe
from mlflow import MlflowClient

from flows.cli import main
from methods.cel import play
from methods.cel.config import CelAblation
from methods.cel.episodes import write_sft_rows
from methods.recipe import load_recipe
from pipeline_lib import agent, tracking
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError
from pipeline_lib.store import read_manifest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "cel-frozenlake-tiny.yaml")


def _run_dir(home: Path, recipe_path: str, *overrides: str):
    recipe = load_recipe(recipe_path, list(overrides))
    return recipe, home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"


def test_recipe_ablation_names_are_the_agents():
    assert set(get_args(CelAblation)) == set(agent.ABLATIONS)


@pytest.mark.parametrize(
    "override, message",
    [
        ("cel.game=chess", "cel.game"),
        ("cel.ablation=no_brain", "cel.ablation"),
        ("cel.knobs.size=1", "size"),
        ("cel.knobs.colour=red", "colour"),
        ("cel.learn_episodes=-1", "cel.learn_episodes"),
    ],
)
def test_bad_cel_settings_are_one_line_errors_naming_the_field(override, message, capsys):
    assert main(["run", TINY, override]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_cel_section_in_another_methods_recipe_is_an_error():
    with pytest.raises(UserError, match="section 'cel' is only used by method 'compare' or 'cel', not 'sft'"):
        load_recipe(REPO / "configs" / "sft-tiny.yaml", ["cel.game=sokoban"])


@pytest.mark.parametrize("game", ["frozen_lake", "sokoban", "minesweeper"])
def test_held_out_layouts_are_never_learning_layouts(game):
    recipe = load_recipe(TINY, [f"cel.game={game}", "cel.knobs={}", "cel.learn_episodes=30", "cel.eval_episodes=30"])
    env = play.make_game(recipe.cel)

    def layouts(seeds):
        keys = []
        for seed in seeds:
            env.reset(seed)
            keys.append(env.layout_key())
        return keys

    learning = layouts(play.learning_seeds(recipe.cel, recipe.seed))
    held_out = layouts(play.held_out_seeds(recipe.cel, recipe.seed))
    assert len(held_out) == len(set(held_out)) == 30
    assert not set(held_out) & set(learning)
    # Another recipe seed plays other layouts.
    assert play.held_out_seeds(recipe.cel, 1) != play.held_out_seeds(recipe.cel, recipe.seed)


def test_too_few_distinct_levels_is_a_clear_error():
    recipe = load_recipe(TINY, ["cel.knobs={size: 3, hole_fraction: 0.0}", "cel.eval_episodes=5"])
    with pytest.raises(UserError, match="too few distinct levels"):
        play.held_out_seeds(recipe.cel, recipe.seed)


def test_agent_options_follow_the_recipe():
    recipe = load_recipe(TINY, ["cel.ablation=search", "cel.temperature=0.9", "cel.eval_temperature=0.1"])
    learning = play.agent_options(recipe.cel, 7, evaluation=False)
    held_out = play.agent_options(recipe.cel, 7, evaluation=True)
    assert (learning.mode, learning.learn, learning.temperature, learning.seed) == ("lookahead", True, 0.9, 7)
    assert (held_out.mode, held_out.learn, held_out.temperature) == ("lookahead", False, 0.1)
    frozen = load_recipe(TINY, ["cel.ablation=frozen", "cel.mode=lookahead"]).cel
    assert play.agent_options(frozen, 0, evaluation=False).learn is False
    assert play.agent_options(frozen, 0, evaluation=False).mode == "lookahead"


def test_sft_rows_keep_only_successful_episodes(tmp_path):
    recipe = load_recipe(TINY, ["cel.max_steps=null"])
    env = play.make_game(recipe.cel)
    won = agent.play_scripted(env, 3)
    lost = agent.play_scripted(env, 4, policy=lambda e: e.legal_actions()[0])
    assert won.success and not lost.success
    learn_dir = tmp_path / "learn"
    learn_dir.mkdir()
    agent.write_trajectories(learn_dir / "trajectories.jsonl", [won, lost])
    out = tmp_path / "rows"
    out.mkdir()
    counts = write_sft_rows(learn_dir, out)
    rows = pq.read_table(out / "train.parquet").to_pylist()
    assert len(rows) == len(won.steps) == counts["rows"]
    assert counts["successful_episodes"] == 1
    # Each row teaches the format with the move the winning episode made.
    assert [row["completion"].splitlines()[-1] for row in rows] == [f"ACTION: {s.action}" for s in won.steps]


@pytest.mark.integration
def test_cel_tiny_learns_logs_knowledge_per_episode_and_resumes(capsys, alignflow_home):
    recipe, run_dir = _run_dir(alignflow_home, TINY)
    out, states = run_recipe(capsys, TINY)
    assert states["cel-evaluate"] == ["Completed", "Completed"] and states["cel-learn"] == ["Completed"]
    # The random model wins nothing, so the SFT round has no rows and is skipped, saying so.
    assert states["cel-sft-rows"] == ["Completed"] and "train-policy" not in states
    assert "no SFT round" in out

    learned = read_manifest(run_dir / "round-1" / "cel-learn")
    assert learned["summary"]["episodes"] == recipe.cel.learn_episodes
    held_out = json.loads((run_dir / "round-1" / "cel-evaluate" / "metrics.json").read_text())
    assert [e["seed"] for e in held_out["episodes"]] == play.held_out_seeds(recipe.cel, recipe.seed)
    trajectories = agent.read_trajectories(run_dir / "round-1" / "cel-learn" / "trajectories.jsonl")
    assert all(len(t.steps) <= recipe.cel.max_steps for t in trajectories)

    client = MlflowClient(tracking.default_tracking_uri())
    parent = tracking.find_run(recipe.tracking.experiment, config_hash(recipe))
    assert [m.step for m in client.get_metric_history(parent, "eval/success_rate")] == [0, 1]
    round_1 = tracking.find_child_run(parent, "round-1")
    curve = client.get_metric_history(round_1, "episode/success")
    assert [m.step for m in curve] == list(range(recipe.cel.learn_episodes))
    artifacts = {a.path for a in client.list_artifacts(round_1, "knowledge/episode-001")}
    assert artifacts == {"knowledge/episode-001/rules.md", "knowledge/episode-001/playbook.md"}
    assert {"cel/success_by_episode.png", "cel/learning_trajectories.json"} <= {
        a.path for a in client.list_artifacts(round_1, "cel")
    }

    # A rerun reuses every stage; a changed held-out setting replays only the held-out layouts.
    assert main(["run", TINY]) == 0
    err = capsys.readouterr().err
    assert err.count("reusing finished output") == 4 and "played" not in err
    assert main(["run", TINY, "cel.eval_episodes=3"]) == 0
    err = capsys.readouterr().err
    assert "stage cel-learn (round-1/cel-learn): reusing finished output" in err and "cel-learn: episode" not in err
    assert "cel-evaluate: episode 3/3 played" in err


@pytest.mark.integration
@pytest.mark.parametrize("game", ["sokoban", "minesweeper"])
def test_cel_tiny_runs_every_game(game, capsys, alignflow_home):
    recipe_path = str(REPO / "configs" / f"cel-{game}-tiny.yaml")
    settings = ["cel.sft.enabled=false", "cel.baseline=false", "cel.learn_episodes=1", "cel.max_steps=2"]
    recipe, run_dir = _run_dir(alignflow_home, recipe_path, *settings)
    _, states = run_recipe(capsys, recipe_path, *settings)
    assert states["cel-learn"] == ["Completed"] and states["cel-evaluate"] == ["Completed"]
    trajectories = agent.read_trajectories(run_dir / "round-1" / "cel-evaluate" / "trajectories.jsonl")
    assert [t.game for t in trajectories] == [game] * recipe.cel.eval_episodes


@pytest.mark.integration
def test_a_killed_learning_stage_resumes_at_the_episode_it_was_in(alignflow_home, tmp_path):
    settings = ["cel.learn_episodes=4", "cel.baseline=false", "cel.sft.enabled=false", "cel.max_steps=3"]
    script = Path(sys.executable).with_name("alignflow")
    log = tmp_path / "first.log"
    with log.open("w") as stream:
        run = subprocess.Popen(
            [str(script), "run", TINY, *settings], stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while "episode 2/4 played" not in log.read_text():
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the learning stage never finished its second episode"
            time.sleep(0.2)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    resumed = subprocess.run([str(script), "run", TINY, *settings], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "episode 1/4 reused from disk" in resumed.stderr and "episode 2/4 reused from disk" in resumed.stderr
    assert "episode 4/4 played" in resumed.stderr
