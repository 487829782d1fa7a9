"""What a training stage reports: its outcome file, its timings (kept out of the digest), its MLflow metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline_lib.reporting import metrics as names
from pipeline_lib.store import read_manifest

TRAIN_METRICS_FILE = "train_metrics.json"
TRAIN_MEASUREMENTS = ("optimizer_step_ms", "runtime_s", "seconds_per_epoch", "tokens_per_s")


def train_metrics(train_dir: str | Path) -> dict[str, Any]:
    """What training recorded: the outcome from its file, this run's timings from the manifest."""
    measured = (read_manifest(Path(train_dir)) or {}).get("train") or {}
    return {**measured, **json.loads((Path(train_dir) / TRAIN_METRICS_FILE).read_text())}


def split_measurements(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the training produced, how long it took): only the first may go into the stage's
    files, whose digest keys every later stage; timings differ on every run of the same inputs."""
    outcome = {k: v for k, v in metrics.items() if k not in TRAIN_MEASUREMENTS}
    return outcome, {k: v for k, v in metrics.items() if k in TRAIN_MEASUREMENTS}


def training_round_metrics(train_dir: str | Path) -> dict[str, float]:
    """A round's ``train/...`` metrics for MLflow: loss, throughput and the objective's own."""
    train = train_metrics(train_dir)
    metrics = {names.TRAIN_LOSS: float(train["train_loss"]), names.TRAIN_TOKENS_PER_S: float(train["tokens_per_s"])}
    if train.get("optimizer_step_ms") is not None:
        metrics[names.TRAIN_OPTIMIZER_STEP_MS] = float(train["optimizer_step_ms"])
    for name, value in (train.get("objective_metrics") or {}).items():
        metrics[names.metric(names.TRAIN, name)] = float(value)
    return metrics
