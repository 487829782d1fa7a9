"""RFT's training rows: the policy's own samples that the verifier passes, as SFT rows.

Rejection sampling: of each prompt's scored samples, keep those scoring at
least ``min_score``, best first (then by sample index, so the choice is the
same every run), at most ``max_per_prompt`` distinct texts (surrounding
whitespace aside) per prompt. The report counts what was kept and why the
rest was not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.suite.files import read_items
from pipeline_lib.training.rows import TRAIN_ROWS_FILE, chat, write_rows

EMPTY_RESPONSE = "empty response"
UNKNOWN_PROMPT = "prompt not among the training items"


def rft_rows(items_dir: Path, scores_file: Path, min_score: float, max_per_prompt: int | None, folder: Path) -> dict[str, Any]:
    """Write the kept samples as ``{"prompt", "completion"}`` rows, prompts in the items' order."""
    items = read_items(items_dir)
    known = {item.id for item in items}
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unusable: Counter[str] = Counter()
    scores = pq.read_table(scores_file).to_pylist()
    for row in scores:
        if row["prompt_id"] in known:
            by_prompt[row["prompt_id"]].append(row)
        else:
            unusable[UNKNOWN_PROMPT] += 1
    rows, covered, passed, duplicates, over_cap = [], 0, 0, 0, 0
    for item in items:
        seen: set[str] = set()
        for sample in sorted(by_prompt[item.id], key=lambda s: (-s["score"], s["sample_index"])):
            if sample["score"] < min_score:
                break  # best first: the rest fail too
            passed += 1
            text = (sample["response"] or "").strip()
            if not text:
                unusable[EMPTY_RESPONSE] += 1  # passed a lenient verifier, but teaches nothing
            elif text in seen:
                duplicates += 1
            elif max_per_prompt is not None and len(seen) >= max_per_prompt:
                over_cap += 1
            else:
                seen.add(text)
                rows.append({"prompt": chat(item.prompt), "completion": sample["response"]})
        covered += bool(seen)
    write_rows(rows, folder / TRAIN_ROWS_FILE)
    report = {
        "prompts": len(items),
        "samples": len(scores),
        "best_score": max((row["score"] for row in scores), default=None),
        "passed": passed,
        "rows": len(rows),
        "prompts_covered": covered,
        "skipped_duplicate": duplicates,
        "skipped_over_cap": over_cap,
    }
    if unusable:
        report["skipped_rows"] = dict(unusable.most_common())
    return report
