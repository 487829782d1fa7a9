"""What a SEFT round reports besides training: decision counts, accepted targets, and the revision table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from methods.seft.targets import TARGETS_FILE
from pipeline_lib.reporting import metrics as names
from pipeline_lib.store import read_manifest

TABLE_COLUMNS = ["prompt", "response", "decision", "revision", "response_score", "target_score", "accepted"]


def revision_metrics(revisions_dir: str | Path, selected_dir: str | Path) -> dict[str, float]:
    """MLflow metrics of a round's ``revise`` and ``select-targets`` outputs."""
    revise = read_manifest(Path(revisions_dir)) or {}
    metrics = {names.metric(names.REVISE, decision): float(count) for decision, count in revise.get("decisions", {}).items()}
    metrics[names.REVISE_MALFORMED] = float(revise.get("malformed", 0))
    select = read_manifest(Path(selected_dir)) or {}
    metrics[names.SELECT_ACCEPTED] = float(select.get("accepted", 0))
    for name in ("response_score", "target_score", "accepted_target_score"):
        if select.get(name) is not None:
            metrics[names.metric(names.SELECT, name)] = float(select[name])
    return metrics


def revision_table(selected_dir: str | Path, limit: int) -> list[dict[str, Any]]:
    """Prompt, policy answer, decision, revision and scores of the first ``limit`` samples."""
    return pq.read_table(Path(selected_dir) / TARGETS_FILE, columns=TABLE_COLUMNS).slice(0, limit).to_pylist()
