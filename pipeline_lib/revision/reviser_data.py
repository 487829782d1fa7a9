"""Build the reviser's two training sets: plain revisions for the warm-up, then balanced decisions.

Source (a): the base policy's samples on suite prompts, graded by the
verifiers. Source (b): a preference dataset (chosen/rejected pairs).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.core.errors import UserError
from pipeline_lib.data import load_rows
from pipeline_lib.data.config import DataConfig
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
    scores_file: Path | None, reviser: ReviserConfig, seed: int, folder: Path
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
    if reviser.preference is not None:
        preference_examples, loaded = _preference_examples(reviser.preference, reviser)
        report["sources"][_source_name(reviser.preference)] = {"decisions": decision_counts(preference_examples), **loaded}
        examples += preference_examples
    if not examples:
        raise UserError("the reviser's sources gave no training examples; check reviser.n_prompts and reviser.preference")
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


def _preference_examples(data: DataConfig, reviser: ReviserConfig) -> tuple[list[ReviserExample], dict[str, Any]]:
    if data.kind != "preference":
        raise UserError(f"reviser.preference.kind must be 'preference' (chosen/rejected pairs), not {data.kind!r}")
    loaded = load_rows(data.source, "preference", data.columns, data.split, data.limit, data.format)
    unusable: Counter[str] = Counter()
    examples = examples_from_preference(
        loaded.rows.to_list(),
        reviser.tau_none,
        reviser.tau_major,
        source=_source_name(data),
        similar_ratio=reviser.similar_ratio,
        skipped=unusable,
    )
    return examples, {
        "rows_read": loaded.n_read,
        "rows_kept": loaded.n_kept,
        "rows_skipped": dict(loaded.skipped),
        "pairs_unusable": dict(unusable),
    }


def _source_name(data: DataConfig) -> str:
    return Path(data.source).name.split(".")[0] if Path(data.source).exists() else data.source

