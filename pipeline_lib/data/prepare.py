"""Prepare one data role: load, validate, render, filter, dedupe, decontaminate, split, report.

Every row that is not kept is counted under its reason, with its first row
numbers, in the report; nothing is dropped silently. The output folder holds

- ``rows.parquet``: the kept rows in the role's shape (see ``roles``), with
  ``prompt_tokens`` and ``total_tokens`` as the model's chat template renders them;
- ``heldout.parquet``: the seeded held-out share, when one is asked for;
- ``items.parquet``: the kept rows as prompts to sample (``id``, ``prompt``,
  ``messages``, ``reference``), which the sampling stages read;
- ``report.json``: what happened to every row.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.config import DataConfig, DataSource
from pipeline_lib.data.decontaminate import NgramIndex
from pipeline_lib.data.items import ITEMS_FILE
from pipeline_lib.data.loaders import MAX_EXAMPLES
from pipeline_lib.data.roles import ROLES, Role, Row, SourceRows, load_role
from pipeline_lib.sampling.base import render_chat

ROWS_FILE = "rows.parquet"
HELDOUT_FILE = "heldout.parquet"
REPORT_FILE = "report.json"
PERCENTILES = (50, 90, 99, 100)


@dataclass(frozen=True)
class Budget:
    """The token limits a row must fit: the sampler's prompt budget, and ``train.max_length`` for training rows."""

    prompt_tokens: int
    total_tokens: int | None  # None: the role is only sampled from, never trained on whole


@dataclass
class _Skips:
    counts: Counter[str]
    first_rows: dict[str, list[str]]

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        rows = self.first_rows.setdefault(reason, [])
        if len(rows) < MAX_EXAMPLES:
            rows.append(where)


def prepare_role(
    role_name: str,
    sources: Sequence[DataSource],
    settings: DataConfig,
    tokenizer: Any,
    budget: Budget,
    eval_prompts: Sequence[str],
    seed: int,
    folder: Path,
) -> dict[str, Any]:
    """Write the prepared role into ``folder``; returns the report (also in ``report.json``)."""
    role = ROLES[role_name]
    skips = _Skips(Counter(), {})
    per_source, rows = [], []
    for loaded in load_role(role_name, list(sources)):
        for reason, count in loaded.loaded.skipped.items():
            skips.counts[reason] += count
            skips.first_rows.setdefault(reason, loaded.loaded.first_rows.get(reason, []))
        per_source.append(_source_report(loaded))
        rows += loaded.rows
    n_read = sum(entry["read"] for entry in per_source)
    rows = _count_tokens(role, rows, tokenizer)
    rows = [row for row in rows if _fits(role, row, budget, skips)]
    if settings.dedupe:
        rows = _dedupe(role, rows, skips)
    removed: list[str] = []
    if settings.decontaminate.enabled:
        rows, removed = _decontaminate(role, rows, eval_prompts, settings.decontaminate.ngram, skips)
    if not rows:
        raise UserError(f"data.{role_name}: no row is left of {n_read} read: {_main_reasons(skips)}")
    rows, heldout = _split(rows, settings.heldout, seed)
    _write(rows, folder / ROWS_FILE)
    if heldout:
        _write(heldout, folder / HELDOUT_FILE)
    _write([_item(role, row) for row in rows], folder / ITEMS_FILE)
    report = {
        "role": role_name,
        "read": n_read,
        "kept": len(rows),
        "heldout": len(heldout),
        "skipped": {
            reason: {"count": count, "first_rows": skips.first_rows.get(reason, [])}
            for reason, count in skips.counts.most_common()
        },
        "decontaminated_ids": removed,
        "decontamination": {"ngram": settings.decontaminate.ngram, "eval_prompts": len(eval_prompts)}
        if settings.decontaminate.enabled
        else None,
        "tokens": {
            "prompt": percentiles([row["prompt_tokens"] for row in rows]),
            "total": percentiles([row["total_tokens"] for row in rows]),
        },
        "sources": per_source,
    }
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def _source_report(loaded: SourceRows) -> dict[str, Any]:
    source = loaded.source
    hub = {"name": source.name, "split": source.split, "revision": source.revision}
    return {
        "key": loaded.key,
        "source": source.source,
        # Only a hub dataset has a configuration, split and revision to choose.
        **({} if Path(source.source).expanduser().exists() else hub),
        "format": loaded.loaded.format,
        "schema": loaded.loaded.schema,
        "read": loaded.loaded.n_read,
        "loaded": loaded.loaded.n_kept,
    }


def _count_tokens(role: Role, rows: list[Row], tokenizer: Any) -> list[Row]:
    """Render each row with the model's chat template and count its prompt and longest sequence."""
    prompts = [render_chat(tokenizer, role.context(row), add_generation_prompt=True) for row in rows]
    prompt_lengths = _lengths(tokenizer, prompts)
    wholes = [[render_chat(tokenizer, c, add_generation_prompt=False) for c in role.conversations(row)] for row in rows]
    flat = _lengths(tokenizer, [text for texts in wholes for text in texts])
    counted, at = [], 0
    for row, prompt_length, texts in zip(rows, prompt_lengths, wholes, strict=True):
        longest = max(flat[at : at + len(texts)], default=prompt_length)
        at += len(texts)
        counted.append({**row, "prompt_tokens": prompt_length, "total_tokens": longest})
    return counted


def _lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _fits(role: Role, row: Row, budget: Budget, skips: _Skips) -> bool:
    if row["prompt_tokens"] > budget.prompt_tokens:
        skips.add(f"prompt longer than the sampler's prompt budget ({budget.prompt_tokens} tokens)", _where(row))
        return False
    if budget.total_tokens is not None and row["total_tokens"] > budget.total_tokens:
        skips.add(f"longer than train.max_length ({budget.total_tokens} tokens)", _where(row))
        return False
    return True


def _normalised(role: Role, row: Row) -> str:
    return "\x1f".join(" ".join(text.lower().split()) for text in role.texts(row))


def _dedupe(role: Role, rows: list[Row], skips: _Skips) -> list[Row]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        text = _normalised(role, row)
        if text in seen:
            skips.add("duplicate of an earlier row", _where(row))
            continue
        seen.add(text)
        kept.append(row)
    return kept


def _decontaminate(
    role: Role, rows: list[Row], eval_prompts: Sequence[str], n: int, skips: _Skips
) -> tuple[list[Row], list[str]]:
    index = NgramIndex(eval_prompts, n)
    if not index:
        return rows, []
    kept, removed = [], []
    for row in rows:
        if index.hits("\n".join(role.texts(row))):
            skips.add(f"shares a {n}-gram with an evaluation prompt", _where(row))
            removed.append(row["id"])
        else:
            kept.append(row)
    return kept, removed


def _split(rows: list[Row], share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded share held out; the rest keeps the source order."""
    n_heldout = round(len(rows) * share)
    if not n_heldout:
        return rows, []
    if n_heldout >= len(rows):
        raise UserError(f"data.heldout={share} would hold out all {len(rows)} rows; lower it")
    chosen = set(random.Random(seed).sample(range(len(rows)), n_heldout))
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def _item(role: Role, row: Row) -> dict[str, Any]:
    context = role.context(row)
    return {"id": row["id"], "prompt": context[-1]["content"], "messages": context, "reference": role.reference(row)}


def _write(rows: list[Row], path: Path) -> None:
    table = pa.Table.from_pylist([{**row, "metadata": json.dumps(row["metadata"])} if "metadata" in row else row for row in rows])
    pq.write_table(table, path)


def _where(row: Row) -> str:
    return f"{row['source']}:{row['source_row']}"


def _main_reasons(skips: _Skips) -> str:
    if not skips.counts:
        return "nothing was skipped"
    return "; ".join(f"{reason} ({count})" for reason, count in skips.counts.most_common(3))


def _rows_text(places: list[str]) -> str:
    """``file:row`` places as "rows 3, 9 of file" when they share a file."""
    files = {place.rpartition(":")[0] for place in places}
    if len(files) != 1:
        return ", ".join(places)
    return f"rows {', '.join(place.rpartition(':')[2] for place in places)} of {Path(files.pop()).name}"


def percentiles(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {}
    points = np.percentile(np.asarray(values), PERCENTILES, method="nearest")
    return {("max" if p == 100 else f"p{p}"): int(v) for p, v in zip(PERCENTILES, points, strict=True)}


def read_rows(path: Path) -> list[Row]:
    """Prepared rows as they were before writing (their metadata decoded)."""
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if isinstance(row.get("metadata"), str):
            row["metadata"] = json.loads(row["metadata"])
    return rows


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / REPORT_FILE).read_text())


def format_report(report: dict[str, Any]) -> str:
    """The report as a few console lines."""
    lines = [f"data.{report['role']}: kept {report['kept']} of {report['read']} rows read"
             + (f", {report['heldout']} more held out" if report["heldout"] else "")]  # fmt: skip
    for source in report["sources"]:
        lines.append(f"  {source['key']}: {source['source']} ({source['format']} as {source['schema']}): "
                     f"{source['loaded']} of {source['read']} rows valid")  # fmt: skip
    for reason, entry in report["skipped"].items():
        lines.append(f"  skipped {entry['count']}: {reason} (first: {_rows_text(entry['first_rows'])})")
    if report["decontaminated_ids"]:
        lines.append(f"  decontaminated ids: {', '.join(report['decontaminated_ids'][:20])}"
                     + (" ..." if len(report["decontaminated_ids"]) > 20 else ""))  # fmt: skip
    for kind, stats in report["tokens"].items():
        if kind == "total" and stats == report["tokens"]["prompt"]:
            continue  # prompts only: nothing past the prompt
        lines.append(f"  {kind} tokens: " + ", ".join(f"{name} {value}" for name, value in stats.items()))
    return "\n".join(lines)
