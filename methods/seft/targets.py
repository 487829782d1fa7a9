"""Choose a round's training targets from the revised samples by the round's accepted decisions.

The verifier scores written next to each target are for reporting only (how
much the reviser helped); selection never looks at them, because SEFT's
prompt pool is unannotated.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import fmean
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.revision import DECISIONS
from pipeline_lib.suite import verify
from pipeline_lib.data.items import has_verifier, read_prompt_items
from pipeline_lib.suite.files import read_items
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, write_rows

TARGETS_FILE = "targets.parquet"


def select_targets(items_dir: Path, revisions_file: Path, accepted: list[str], folder: Path) -> dict[str, Any]:
    """Write ``targets.parquet`` (every sample, with its fate) and ``train.parquet`` (the accepted chat rows)."""
    items = {item.id: item for item in read_prompt_items(items_dir)}
    # The suite's items can be verified; the user's prompts cannot, so their scores stay empty.
    verifiable = {item.id: item for item in read_items(items_dir)} if has_verifier(items_dir) else {}
    rows = []
    for revision in pq.read_table(revisions_file).to_pylist():
        item, suite_item = items[revision["prompt_id"]], verifiable.get(revision["prompt_id"])
        target = revision["enhanced"]
        rows.append(
            {
                "prompt_id": revision["prompt_id"],
                "sample_index": revision["sample_index"],
                "family": item.family,
                "prompt": item.prompt,
                "response": revision["response"],
                "decision": revision["decision"] or f"malformed: {revision['malformed']}",
                "revision": revision["revision"],
                "target": target,
                "accepted": target is not None and revision["decision"] in accepted,
                "response_score": verify(suite_item, revision["response"]).score if suite_item else None,
                "target_score": verify(suite_item, target).score if suite_item and target is not None else None,
            }
        )
    write_rows(rows, folder / TARGETS_FILE)
    chat_rows = [
        {"prompt": items[row["prompt_id"]].messages, "completion": [{"role": "assistant", "content": row["target"]}]}
        for row in rows
        if row["accepted"]
    ]
    write_rows(chat_rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows), **selection_report(rows, accepted)}


def selection_report(rows: list[dict[str, Any]], accepted: list[str]) -> dict[str, Any]:
    kept = [row for row in rows if row["accepted"]]
    by_decision = Counter(row["decision"] for row in kept)
    usable = [row for row in rows if row["target"] is not None and row["target_score"] is not None]
    return {
        "accepted_decisions": list(accepted),
        "accepted": len(kept),
        "accepted_by_decision": {decision: by_decision.get(decision, 0) for decision in DECISIONS},
        "response_score": _mean(row["response_score"] for row in rows if row["response_score"] is not None),
        "target_score": _mean(row["target_score"] for row in usable),
        "accepted_target_score": _mean(row["target_score"] for row in kept if row["target_score"] is not None),
    }


def _mean(values) -> float | None:
    values = list(values)
    return round(fmean(values), 4) if values else None
