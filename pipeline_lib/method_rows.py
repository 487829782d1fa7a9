"""Training rows for the methods other than SEFT, from suite items, policy samples, scores and revisions.

Every builder writes ``train.parquet`` (the rows ``train_model`` reads for
its objective) and returns a report of what it kept and skipped and why.

- SFT / IFT: the suite's reference answers (the "real" SFT data).
- SPIN: real answer = reference (chosen), the policy's own sample = generated
  (rejected); iteration t trains on its pairs plus iteration t−1's.
- DPO: reference (chosen) against the policy's lowest-scoring sample
  (rejected), for prompts where a sample fails its verifier: pairs exist only
  where the policy was wrong.
- FIGA: the policy's sample (original) and a revision of it (revised): the
  SEFT reviser's minor or major revision, or the reference answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.evaluation import read_items

TRAIN_ROWS_FILE = "train.parquet"
PAIRS_FILE = "pairs.parquet"  # SPIN: this iteration's new pairs, which the next iteration trains on again


def _chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _write(rows: list[dict[str, Any]], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def sft_rows(items_dir: Path, folder: Path) -> dict[str, Any]:
    rows = [{"prompt": _chat(item.prompt), "completion": item.reference} for item in read_items(items_dir)]
    _write(rows, folder / TRAIN_ROWS_FILE)
    return {"rows": len(rows)}


def _first_samples(samples_file: Path) -> dict[str, str]:
    """Each prompt's first sample (index 0)."""
    return {s["prompt_id"]: s["text"] for s in pq.read_table(samples_file).to_pylist() if s["sample_index"] == 0}


def spin_pairs(items_dir: Path, samples_file: Path, previous_pairs: Path | None, seed: int, folder: Path) -> dict[str, Any]:
    samples = _first_samples(samples_file)
    pairs = [
        {"prompt": _chat(item.prompt), "chosen": item.reference, "rejected": samples[item.id], "prompt_id": item.id}
        for item in read_items(items_dir)
        if item.id in samples
    ]
    identical = sum(pair["chosen"] == pair["rejected"] for pair in pairs)
    _write(pairs, folder / PAIRS_FILE)
    earlier = pq.read_table(previous_pairs).to_pylist() if previous_pairs else []
    train = pairs + earlier
    random.Random(seed).shuffle(train)
    _write(train, folder / TRAIN_ROWS_FILE)
    # A sample equal to the real answer gives u = 0 for every θ: a constant loss with no gradient.
    return {"new_pairs": len(pairs), "previous_pairs": len(earlier), "rows": len(train), "identical_pairs": identical}


def dpo_pairs(items_dir: Path, scores_file: Path, folder: Path) -> dict[str, Any]:
    worst: dict[str, dict[str, Any]] = {}
    for row in pq.read_table(scores_file).to_pylist():
        if row["prompt_id"] not in worst or row["score"] < worst[row["prompt_id"]]["score"]:
            worst[row["prompt_id"]] = row
    pairs = []
    for item in read_items(items_dir):
        sample = worst.get(item.id)
        if sample is not None and sample["score"] < 1.0 and sample["response"] != item.reference:
            pairs.append({"prompt": _chat(item.prompt), "chosen": item.reference, "rejected": sample["response"]})
    _write(pairs, folder / TRAIN_ROWS_FILE)
    return {"prompts": len(worst), "rows": len(pairs), "skipped_all_samples_passed": len(worst) - len(pairs)}


def figa_rows(items_dir: Path, samples_file: Path, revisions_file: Path | None, folder: Path) -> dict[str, Any]:
    """Original = the policy's first sample; revised = its revision (minor/major) or else the reference."""
    items = {item.id: item for item in read_items(items_dir)}
    if revisions_file is None:
        candidates: Iterable[tuple[str, str, str]] = (
            (pid, text, items[pid].reference) for pid, text in _first_samples(samples_file).items()
        )
    else:
        candidates = (
            (r["prompt_id"], r["response"], r["enhanced"])
            for r in pq.read_table(revisions_file).to_pylist()
            if r["sample_index"] == 0 and r["decision"] in ("minor", "major") and r["enhanced"] is not None
        )
    rows, unchanged = [], 0
    for prompt_id, original, revised in candidates:
        if revised == original:
            unchanged += 1  # no edit: nothing to learn from the pair
            continue
        rows.append({"prompt": _chat(items[prompt_id].prompt), "original": original, "revised": revised})
    _write(rows, folder / TRAIN_ROWS_FILE)
    source = "reference" if revisions_file is None else "reviser"
    return {"rows": len(rows), "skipped_unchanged": unchanged, "revised_from": source}
