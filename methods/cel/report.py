"""What a CEL round reports: held-out metrics, and for a learning round the per-episode curve, the
rules and playbook text after every episode, and the trajectories."""

from __future__ import annotations

import json
from pathlib import Path

from methods.cel.episodes import KNOWLEDGE_HISTORY_FILE, EPISODES_FILE, TRAJECTORIES_FILE, read_episode_metrics
from pipeline_lib import tracking
from pipeline_lib.reporting import metrics as m
from pipeline_lib.reporting.figures import new_figure

# An MLflow table the UI still opens quickly.
TABLE_ROWS = 2000
EPISODE_METRICS = ("success", "steps", "invalid_rate", "world_model_accuracy")
SUCCESS_SO_FAR = m.metric(m.EPISODE, "success_rate_so_far")


def round_metrics(eval_dir: str, learn_dir: str | None) -> dict[str, float]:
    """Held-out summary under ``eval/``; with a learning stage, its summary too under ``learn/``."""
    metrics = {m.metric(m.EVAL, name): value for name, value in read_episode_metrics(eval_dir)["summary"].items()}
    if learn_dir:
        metrics.update({m.metric(m.LEARN, name): value for name, value in read_episode_metrics(learn_dir)["summary"].items()})
    return metrics


def episode_points(episodes: list[dict]) -> list[dict[str, float]]:
    """Each learning episode's metrics, with the success rate so far, to log stepped by episode."""
    rates = success_so_far(episodes)
    return [
        {**{m.metric(m.EPISODE, name): episode[name] for name in EPISODE_METRICS}, SUCCESS_SO_FAR: rate}
        for episode, rate in zip(episodes, rates, strict=True)
    ]


def knowledge_sizes(entry: dict) -> dict[str, int]:
    """The length of the rules and playbook one learning episode left behind."""
    return {m.metric(m.EPISODE, f"{text}_chars"): len(entry[text]) for text in ("rules", "playbook")}


def success_so_far(episodes: list[dict]) -> list[float]:
    """The success rate over the first k learning episodes, for each k."""
    rates, wins = [], 0
    for count, episode in enumerate(episodes, start=1):
        wins += episode["success"]
        rates.append(wins / count)
    return rates


def success_figure(episodes: list[dict]):
    """Success per learning episode, with the running success rate."""
    xs = list(range(1, len(episodes) + 1))
    figure, (axes,) = new_figure(7, 3)
    axes.scatter(xs, [e["success"] for e in episodes], marker="o", label="episode success")
    axes.plot(xs, success_so_far(episodes), label="success rate so far")
    axes.set_xlabel("learning episode")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("CEL: success by episode")
    axes.legend(loc="center right")
    return figure


def step_rows(stage_dir: str) -> list[dict]:
    """A stage's trajectories, one row per step, as many as an MLflow table shows."""
    from pipeline_lib.agent import read_trajectories, trajectories_table

    return trajectories_table(read_trajectories(Path(stage_dir) / TRAJECTORIES_FILE))[:TABLE_ROWS]


def log_held_out(eval_dir: str, round_index: int, run_id: str) -> None:
    tracking.log_artifact(Path(eval_dir) / EPISODES_FILE, "held-out", run_id=run_id)
    tracking.log_table(step_rows(eval_dir), f"cel/held_out_trajectories_round{round_index}.json", run_id=run_id)


def log_learning(learn_dir: str, run_id: str) -> None:
    """The learning curve by episode, the knowledge after each episode, the figure and the trajectories."""
    episodes = read_episode_metrics(learn_dir)["episodes"]
    for index, point in enumerate(episode_points(episodes)):
        tracking.log_metrics(point, step=index, run_id=run_id)
    for line in (Path(learn_dir) / KNOWLEDGE_HISTORY_FILE).read_text().splitlines():
        entry = json.loads(line)
        folder = f"knowledge/episode-{entry['episode']:03d}"
        tracking.log_text(entry["rules"] or "(empty)\n", f"{folder}/rules.md", run_id=run_id)
        tracking.log_text(entry["playbook"] or "(empty)\n", f"{folder}/playbook.md", run_id=run_id)
        tracking.log_metrics(knowledge_sizes(entry), step=entry["episode"], run_id=run_id)
    tracking.log_artifact(Path(learn_dir) / KNOWLEDGE_HISTORY_FILE, "knowledge", run_id=run_id)
    tracking.log_figure(success_figure(episodes), "cel/success_by_episode.png", run_id=run_id)
    tracking.log_table(step_rows(learn_dir), "cel/learning_trajectories.json", run_id=run_id)
