"""What a SEFT round reports: decision counts, accepted targets, train loss, and the revision table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.seft.targets import TARGETS_FILE
from pipeline_lib.store import read_manifest

TRAIN_METRICS_FILE = "train_metrics.json"
TRAIN_MEASUREMENTS = ("optimizer_step_ms", "runtime_s", "seconds_per_epoch", "tokens_per_s")
TABLE_COLUMNS = ["prompt", "response", "decision", "revision", "response_score", "target_score", "accepted"]


def round_metrics(stage_dirs: Mapping[str, str]) -> dict[str, float]:
    """MLflow metrics from a round's ``revise``, ``select`` and ``train`` stage outputs (those present)."""
    metrics: dict[str, float] = {}
    if "revise" in stage_dirs:
        revise = read_manifest(Path(stage_dirs["revise"])) or {}
        for decision, count in revise.get("decisions", {}).items():
            metrics[f"revise/{decision}"] = float(count)
        metrics["revise/malformed"] = float(revise.get("malformed", 0))
    if "select" in stage_dirs:
        select = read_manifest(Path(stage_dirs["select"])) or {}
        metrics["select/accepted"] = float(select.get("accepted", 0))
        for name in ("response_score", "target_score", "accepted_target_score"):
            if select.get(name) is not None:
                metrics[f"select/{name}"] = float(select[name])
    if "train" in stage_dirs:
        train = train_metrics(stage_dirs["train"])
        metrics["train/loss"] = float(train["train_loss"])
        metrics["train/tokens_per_s"] = float(train["tokens_per_s"])
        if train.get("optimizer_step_ms") is not None:
            metrics["train/optimizer_step_ms"] = float(train["optimizer_step_ms"])
        for name, value in (train.get("objective_metrics") or {}).items():
            metrics[f"train/{name}"] = float(value)
    return metrics


def train_metrics(train_dir: str | Path) -> dict[str, Any]:
    """What training recorded: the outcome from its file, this run's timings from the manifest."""
    measured = (read_manifest(Path(train_dir)) or {}).get("train") or {}
    return {**measured, **json.loads((Path(train_dir) / TRAIN_METRICS_FILE).read_text())}


def split_measurements(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the training produced, how long it took): only the first may go into the stage's
    files, whose digest keys every later stage; timings differ on every run of the same inputs."""
    outcome = {k: v for k, v in metrics.items() if k not in TRAIN_MEASUREMENTS}
    return outcome, {k: v for k, v in metrics.items() if k in TRAIN_MEASUREMENTS}


def revision_table(select_dir: str | Path, limit: int) -> list[dict[str, Any]]:
    """Prompt, policy answer, decision, revision and scores of the first ``limit`` samples."""
    return pq.read_table(Path(select_dir) / TARGETS_FILE, columns=TABLE_COLUMNS).slice(0, limit).to_pylist()
