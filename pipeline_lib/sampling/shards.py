"""Sampling a prompt set into one Parquet file, in resumable shards.

A long sampling stage killed halfway keeps its finished shards: each is
written atomically next to a small JSON that records what it was made from
(params, backend, model, prompts), and a rerun regenerates only shards that
are missing or were made from something else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline_lib.core import progress
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams, derive_seed
from pipeline_lib.sampling.replicas import run_shards
from pipeline_lib.store import atomic_write_parquet, atomic_write_text

# The one layout of sample files, whatever backend produced them.
SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("completion_tokens", pa.int32(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
    ]
)


def samples_table(prompt_ids: list[str], samples: list[Sample]) -> pa.Table:
    """Rows in SAMPLES_SCHEMA; ``prompt_index`` of each sample indexes ``prompt_ids``."""
    return pa.Table.from_pydict(
        {
            "prompt_id": [prompt_ids[s.prompt_index] for s in samples],
            "sample_index": [s.sample_index for s in samples],
            "text": [s.text for s in samples],
            "prompt_tokens": [s.prompt_tokens for s in samples],
            "completion_tokens": [s.completion_tokens for s in samples],
            "finish_reason": [s.finish_reason for s in samples],
        },
        schema=SAMPLES_SCHEMA,
    )


def sample_to_parquet(
    sampler: Sampler,
    prompt_ids: list[str],
    prompts: list[str],
    params: SamplingParams,
    out_file: Path,
    shard_dir: Path,
    shard_size: int = 64,
) -> dict[str, Any]:
    """Sample ``params.n`` completions per prompt into ``out_file``, reusing matching finished shards.

    Returns row and token totals over the whole file, plus how many shards
    were reused and the completion tokens per second of the shards generated
    by this call. Shards to make go through ``run_shards``: in order on one
    sampler, to whichever replica is free on a ``ReplicaSet`` (whose stats,
    the replicas, their failures and shards each, are added).
    """
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompt_ids)} prompt ids for {len(prompts)} prompts")
    if len(set(prompt_ids)) != len(prompt_ids):
        raise ValueError("prompt ids must be unique: they identify the prompt of each sample row")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_file, shard_dir = Path(out_file), Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables: list[pa.Table | None] = []
    todo, jobs = [], []
    for index, first in enumerate(range(0, len(prompts), shard_size)):
        ids, texts = prompt_ids[first : first + shard_size], prompts[first : first + shard_size]
        parquet, meta_file = shard_dir / f"shard-{index:05d}.parquet", shard_dir / f"shard-{index:05d}.json"
        # What the shard is made from, never which replica made it: greedy rows are the same on any.
        meta = _shard_meta(sampler, params, ids, texts)
        if _is_complete(parquet, meta_file, meta):
            tables.append(pq.read_table(parquet, schema=SAMPLES_SCHEMA))
            continue
        tables.append(None)
        todo.append(index)
        # Each shard gets its own seed so shards do not replay the same random stream.
        shard_params = dataclasses.replace(params, seed=derive_seed(params.seed, "shard", index))
        jobs.append(partial(_sample_shard, ids, texts, shard_params, parquet, meta_file, meta))
    reused_rows = sum(table.num_rows for table in tables if table is not None)
    progress.phase("sampling", total=len(prompts) * params.n, done=reused_rows)
    made, replicas = run_shards(sampler, jobs, todo)
    for index, table in zip(todo, made, strict=True):
        tables[index] = table
    generated_tokens = sum(_total(table, "completion_tokens") for table in made)
    seconds = time.perf_counter() - started
    result = pa.concat_tables(tables) if tables else SAMPLES_SCHEMA.empty_table()
    atomic_write_parquet(result, out_file)
    return {
        "backend": sampler.name,
        "n_prompts": len(prompts),
        "n_samples": result.num_rows,
        "prompt_tokens": _total(result, "prompt_tokens"),
        "completion_tokens": _total(result, "completion_tokens"),
        "seconds": round(seconds, 3),
        "tokens_per_second": round(generated_tokens / seconds, 2) if generated_tokens else 0.0,
        "shards_reused": len(tables) - len(todo),
        "shards_total": len(tables),
        **replicas,
    }


def _sample_shard(
    ids: list[str], texts: list[str], params: SamplingParams, parquet: Path, meta_file: Path, meta: dict[str, Any],
    sampler: Sampler,
) -> pa.Table:  # fmt: skip
    table = samples_table(ids, sampler.generate(texts, params))
    atomic_write_parquet(table, parquet)
    # The JSON goes last: it is the marker that the shard beside it is complete.
    atomic_write_text(meta_file, json.dumps(meta, indent=2, sort_keys=True))
    return table


def _shard_meta(sampler: Sampler, params: SamplingParams, ids: list[str], texts: list[str]) -> dict[str, Any]:
    prompts_digest = hashlib.sha256(json.dumps([ids, texts]).encode()).hexdigest()
    return {
        "backend": sampler.name,
        "model": sampler.model_id,
        "params": params.describe(),
        "prompts_sha256": prompts_digest,
        "rows": len(ids) * params.n,
    }


def _is_complete(parquet: Path, meta_file: Path, meta: dict[str, Any]) -> bool:
    try:
        recorded = json.loads(meta_file.read_text())
        rows = pq.read_metadata(parquet).num_rows
    except (FileNotFoundError, json.JSONDecodeError, pa.ArrowInvalid):
        return False
    return recorded == meta and rows == meta["rows"]


def _total(table: pa.Table, column: str) -> int:
    return int(pc.sum(table[column]).as_py() or 0)
