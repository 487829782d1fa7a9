"""CEL rounds in MLflow: held-out metrics per round, and for a learning round the
per-episode curve, the rules and playbook text after every episode, and the trajectories."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from pipeline_lib import tracking
from tasks.cel import KNOWLEDGE_HISTORY_FILE, METRICS_FILE, TRAJECTORIES_FILE, read_metrics
from tasks.evaluation import round_child_run

# An MLflow table the UI still opens quickly.
TABLE_ROWS = 2000
EPISODE_METRICS = ("success", "steps", "invalid_rate", "world_model_accuracy")


def round_metrics(eval_dir: str, learn_dir: str | None) -> dict[str, float]:
    """Held-out summary under ``eval/``; with a learning stage, its summary too under ``learn/``."""
    metrics = {f"eval/{name}": value for name, value in read_metrics(eval_dir)["summary"].items()}
    if learn_dir:
        metrics.update({f"learn/{name}": value for name, value in read_metrics(learn_dir)["summary"].items()})
    return metrics


@task(name="log-cel-round", retries=2, retry_delay_seconds=2, tags=["tracking"])
def log_cel_round(parent_run_id: str, round_index: int, eval_dir: str, learn_dir: str | None = None) -> dict:
    """Log round ``round_index`` to its child run ``round-K`` and, stepped by round, to the parent.

    Like every round logger, a rerun over the same outputs finds the child it
    logged and logs nothing twice.
    """
    metrics = round_metrics(eval_dir, learn_dir)
    with round_child_run(parent_run_id, round_index, [d for d in (eval_dir, learn_dir) if d], metrics) as run_id:
        if run_id is None:
            return metrics
        tracking.log_artifact(Path(eval_dir) / METRICS_FILE, "held-out", run_id=run_id)
        tracking.log_table(_step_rows(eval_dir), f"cel/held_out_trajectories_round{round_index}.json", run_id=run_id)
        if learn_dir:
            _log_learning(learn_dir, run_id)
    return metrics


def _log_learning(learn_dir: str, run_id: str) -> None:
    episodes = read_metrics(learn_dir)["episodes"]
    for index, (episode, rate) in enumerate(zip(episodes, _success_so_far(episodes))):
        values = {f"episode/{name}": episode[name] for name in EPISODE_METRICS}
        tracking.log_metrics({**values, "episode/success_rate_so_far": rate}, step=index, run_id=run_id)
    for line in (Path(learn_dir) / KNOWLEDGE_HISTORY_FILE).read_text().splitlines():
        entry = json.loads(line)
        folder = f"knowledge/episode-{entry['episode']:03d}"
        tracking.log_text(entry["rules"] or "(empty)\n", f"{folder}/rules.md", run_id=run_id)
        tracking.log_text(entry["playbook"] or "(empty)\n", f"{folder}/playbook.md", run_id=run_id)
        tracking.log_metrics(
            {"episode/rules_chars": len(entry["rules"]), "episode/playbook_chars": len(entry["playbook"])},
            step=entry["episode"],
            run_id=run_id,
        )
    tracking.log_artifact(Path(learn_dir) / KNOWLEDGE_HISTORY_FILE, "knowledge", run_id=run_id)
    tracking.log_figure(success_figure(episodes), "cel/success_by_episode.png", run_id=run_id)
    tracking.log_table(_step_rows(learn_dir), "cel/learning_trajectories.json", run_id=run_id)


def success_figure(episodes: list[dict]):
    """Success per learning episode, with the running success rate."""
    from matplotlib.figure import Figure

    xs = list(range(1, len(episodes) + 1))
    running = _success_so_far(episodes)
    figure = Figure(figsize=(7, 3), layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(xs, [e["success"] for e in episodes], marker="o", label="episode success")
    axes.plot(xs, running, label="success rate so far")
    axes.set_xlabel("learning episode")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("CEL: success by episode")
    axes.legend(loc="center right")
    return figure


def _success_so_far(episodes: list[dict]) -> list[float]:
    """The success rate over the first k learning episodes, for each k."""
    rates, wins = [], 0
    for count, episode in enumerate(episodes, start=1):
        wins += episode["success"]
        rates.append(wins / count)
    return rates


def _step_rows(stage_dir: str) -> list[dict]:
    from pipeline_lib.agent import read_trajectories, trajectories_table

    rows = trajectories_table(read_trajectories(Path(stage_dir) / TRAJECTORIES_FILE))
    return rows[:TABLE_ROWS]
