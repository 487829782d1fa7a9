"""Build the reviser's two training sets: plain revisions for the warm-up, then balanced decisions.

Source (a): the base policy's samples on suite prompts, graded by the
verifiers. Source (b): the prepared ``data.preference`` rows (chosen/rejected pairs).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.prepare import read_rows
from pipeline_lib.revision import (
    ReviserExample,
    balance_decisions,
    decision_counts,
    examples_from_preference,
    examples_from_scored_samples,
    to_chat_rows,
    warmup_examples,
)
from pipeline_lib.revision.config import ReviserConfig
from pipeline_lib.training.rows import write_rows

WARMUP_FILE = "warmup.parquet"
ADAPTIVE_FILE = "adaptive.parquet"


def build_reviser_data(
    scores_file: Path | None, preference_file: Path | None, reviser: ReviserConfig, seed: int, folder: Path
) -> dict[str, Any]:
    """Write ``warmup.parquet`` and ``adaptive.parquet`` (chat rows) into ``folder``; return the counts."""
    examples: list[ReviserExample] = []
    report: dict[str, Any] = {"sources": {}}
    if scores_file is not None:
        no_target: Counter[str] = Counter()
        suite_examples = examples_from_scored_samples(
            pq.read_table(scores_file).to_pylist(), reviser.tau_none, reviser.tau_major, reviser.target, no_target
        )
        report["sources"]["suite"] = {"decisions": decision_counts(suite_examples), "samples_unusable": dict(no_target)}
        examples += suite_examples
    if preference_file is not None:
        for name, rows in _by_source(read_rows(preference_file)).items():
            unusable: Counter[str] = Counter()
            preference_examples = examples_from_preference(
                rows, reviser.tau_none, reviser.tau_major, source=name, similar_ratio=reviser.similar_ratio, skipped=unusable
            )
            report["sources"][name] = {
                "decisions": decision_counts(preference_examples), "rows_read": len(rows), "pairs_unusable": dict(unusable)
            }
            examples += preference_examples
    if not examples:
        raise UserError("the reviser's sources gave no training examples; check reviser.n_prompts and data.preference")
    # Every row a source could not use, by reason, for the console's one line per stage.
    report["skipped_rows"] = dict(sum(map(_skips, report["sources"].values()), Counter()).most_common())
    warmup = _draw(warmup_examples(examples), reviser.warmup_rows, seed)
    adaptive = balance_decisions(examples, seed=seed, max_ratio=reviser.balance_ratio)
    write_rows(to_chat_rows(warmup), folder / WARMUP_FILE)
    write_rows(to_chat_rows(adaptive), folder / ADAPTIVE_FILE)
    report.update(
        warmup_rows=len(warmup),
        adaptive_rows=len(adaptive),
        decisions_before_balance=decision_counts(examples),
        decisions=decision_counts(adaptive),
    )
    return report


def _skips(source: dict[str, Any]) -> Counter[str]:
    return sum((Counter(source.get(part, {})) for part in ("rows_skipped", "pairs_unusable", "samples_unusable")), Counter())


def _draw(examples: list[ReviserExample], limit: int | None, seed: int) -> list[ReviserExample]:
    """At most ``limit`` examples, a seeded draw that keeps their order (and so every source's share)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [example for index, example in enumerate(examples) if index in keep]


def _by_source(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The prepared rows of each source, in order, under the source's short name (a file's stem, or the hub id)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        # A hub dataset's rows say "org/name:split"; a file's, its path.
        hub_id, _, split = row["source"].rpartition(":")
        name = hub_id if hub_id and "/" in hub_id and not Path(row["source"]).exists() else Path(row["source"]).name.split(".")[0]
        groups.setdefault(name, []).append(row)
    return groups
