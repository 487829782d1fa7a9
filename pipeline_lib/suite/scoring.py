"""Held-out evaluation on the built-in suite: answers to per-sample scores and summary metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.reporting.metrics import EVAL, metric
from pipeline_lib.suite.files import read_items
from pipeline_lib.suite.verify import summarize_scores, verify

SCORES_FILE = "scores.parquet"
METRICS_FILE = "metrics.json"


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


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers worth charting, as MLflow metric names (``eval/score/arithmetic``)."""
    flat = {metric(EVAL, name): float(metrics[name]) for name in ("score", "pass_rate", "length")}
    for family, stats in metrics["families"].items():
        flat[metric(EVAL, "score", family)] = float(stats["mean_score"])
        flat[metric(EVAL, "pass_rate", family)] = float(stats["pass_rate"])
    return flat
