"""Apply the reviser to policy samples: one greedy reviser call per sample, every output parsed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.data.items import read_prompt_items
from pipeline_lib.revision import DECISIONS, enhanced_target, parse_reviser_output, reviser_messages
from pipeline_lib.sampling import SamplingParams
from pipeline_lib.sampling.stage import sample_chat

REVISIONS_FILE = "revisions.parquet"
OUTPUTS_FILE = "reviser_outputs.parquet"


def revise_samples(
    items_dir: Path,
    samples_file: Path,
    reviser_path: Path,
    dtype: str,
    sampler: SamplerConfig,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    folder: Path,
    shard_dir: Path,
) -> dict[str, Any]:
    """Write ``revisions.parquet`` (one row per policy sample) and return the decision counts.

    A malformed reviser output is kept in the file with its reason, never
    dropped unseen; its sample simply has no enhanced target.
    """
    items = {item.id: item for item in read_prompt_items(items_dir)}
    samples = pq.read_table(samples_file).to_pylist()
    ids = [f"{s['prompt_id']}#{s['sample_index']}" for s in samples]
    messages = [reviser_messages(items[s["prompt_id"]].dialogue, s["text"]) for s in samples]
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    stats = sample_chat(
        ids, messages, reviser_path, dtype, sampler, params, folder / OUTPUTS_FILE, shard_dir, batch_size=batch_size
    )
    outputs = {row["prompt_id"]: row for row in pq.read_table(folder / OUTPUTS_FILE).to_pylist()}
    rows = []
    for sample_id, sample in zip(ids, samples, strict=True):
        output = outputs[sample_id]
        parsed = parse_reviser_output(output["text"], output["finish_reason"])
        rows.append(
            {
                "prompt_id": sample["prompt_id"],
                "sample_index": sample["sample_index"],
                "prompt": items[sample["prompt_id"]].prompt,
                "response": sample["text"],
                "reviser_output": output["text"],
                "decision": parsed.decision,
                "revision": parsed.revision,
                "malformed": parsed.malformed,
                "enhanced": enhanced_target(parsed, sample["text"]),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), folder / REVISIONS_FILE)
    return {"sampling": stats, "rows": len(rows), **decision_report(rows)}


def decision_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    decisions = Counter(row["decision"] for row in rows if row["malformed"] is None)
    reasons = Counter(row["malformed"] for row in rows if row["malformed"] is not None)
    return {
        "decisions": {decision: decisions.get(decision, 0) for decision in DECISIONS},
        "malformed": sum(reasons.values()),
        "malformed_reasons": dict(reasons),
    }
