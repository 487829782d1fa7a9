"""Held-out evaluation on the built-in suite: items to Parquet, answers to scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.config import SuiteConfig
from pipeline_lib.suite import SuiteItem, generate_suite, summarize_scores, verify

ITEMS_FILE = "items.parquet"
SCORES_FILE = "scores.parquet"
METRICS_FILE = "metrics.json"


def write_suite_split(
    config: SuiteConfig, split: str, folder: Path, start: int = 0, stop: int | None = None
) -> dict[str, Any]:
    """Generate one split of the suite (or its items ``start:stop``) into ``folder/items.parquet``."""
    n = config.n_eval if split == "eval" else config.n_train
    items = generate_suite(split, n, seed=config.seed, families=config.families, difficulty=config.difficulty)
    items = items[start:stop]
    pq.write_table(pa.Table.from_pylist([item.to_row() for item in items]), folder / ITEMS_FILE)
    return {"rows": len(items), "split": split}


def read_items(folder: Path) -> list[SuiteItem]:
    return [SuiteItem.from_row(row) for row in pq.read_table(Path(folder) / ITEMS_FILE).to_pylist()]


def score_samples(items_dir: Path, samples_file: Path, folder: Path) -> dict[str, Any]:
    """Verify every sample against its item; write per-sample scores and the summary metrics.

    Metrics: mean verifier score, pass rate (score == 1) and mean response
    length in completion tokens, overall and per family.
    """
    items = {item.id: item for item in read_items(items_dir)}
    samples = pq.read_table(samples_file).to_pylist()
    rows = []
    for sample in samples:
        item = items[sample["prompt_id"]]
        verdict = verify(item, sample["text"])
        rows.append(
            {
                "prompt_id": item.id,
                "sample_index": sample["sample_index"],
                "family": item.family,
                "difficulty": item.difficulty,
                "prompt": item.prompt,
                "response": sample["text"],
                "reference": item.reference,
                "score": verdict.score,
                "passed": verdict.score == 1.0,
                "reasons": "; ".join(verdict.reasons),
                "completion_tokens": sample["completion_tokens"],
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), folder / SCORES_FILE)
    summary = summarize_scores([(r["family"], r["difficulty"], r["score"]) for r in rows])
    lengths = [r["completion_tokens"] for r in rows]
    metrics = {
        "score": summary["overall"]["mean_score"],
        "pass_rate": summary["overall"]["pass_rate"],
        "length": sum(lengths) / len(lengths) if lengths else 0.0,
        "n": len(rows),
        "families": summary["families"],
        "difficulties": summary["difficulties"],
    }
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return {"rows": len(rows), "score": metrics["score"], "pass_rate": metrics["pass_rate"]}


def read_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


def flat_metrics(metrics: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """The numbers worth charting, as MLflow metric names (``eval/score/arithmetic``)."""
    flat = {f"{prefix}/{name}": float(metrics[name]) for name in ("score", "pass_rate", "length")}
    for family, stats in metrics["families"].items():
        flat[f"{prefix}/score/{family}"] = float(stats["mean_score"])
        flat[f"{prefix}/pass_rate/{family}"] = float(stats["pass_rate"])
    return flat


def family_figure(metrics: dict[str, Any], title: str):
    """Bar chart of mean score and pass rate per family (a matplotlib Figure, no global state)."""
    from matplotlib.figure import Figure

    families = list(metrics["families"])
    scores = [metrics["families"][f]["mean_score"] for f in families]
    passes = [metrics["families"][f]["pass_rate"] for f in families]
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(families))
    axes.bar([p - 0.2 for p in positions], scores, width=0.4, label="mean score")
    axes.bar([p + 0.2 for p in positions], passes, width=0.4, label="pass rate")
    axes.set_xticks(list(positions), families, rotation=20)
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend()
    return figure


def family_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the per-family scores for the console."""
    lines = [f"{'family':<18}{'n':>5}{'score':>8}{'pass':>8}"]
    for family, stats in metrics["families"].items():
        lines.append(f"{family:<18}{stats['count']:>5}{stats['mean_score']:>8.3f}{stats['pass_rate']:>8.3f}")
    lines.append(f"{'overall':<18}{metrics['n']:>5}{metrics['score']:>8.3f}{metrics['pass_rate']:>8.3f}")
    lines.append(f"mean response length: {metrics['length']:.1f} tokens")
    return "\n".join(lines)


def rounds_figure(rounds: dict[int, dict[str, float]], title: str):
    """Held-out mean score and pass rate by round (round 0 is the base model)."""
    from matplotlib.figure import Figure

    indices = sorted(rounds)
    figure = Figure(figsize=(5, 3.5), layout="constrained")
    axes = figure.add_subplot()
    for metric, label in (("eval/score", "mean score"), ("eval/pass_rate", "pass rate")):
        axes.plot(indices, [rounds[i][metric] for i in indices], marker="o", label=label)
    axes.set_xticks(indices)
    axes.set_xlabel("round")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend()
    return figure
