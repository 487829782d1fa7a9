"""Asking the judge, in resumable shards: a killed judging stage keeps every shard it finished.

Each request carries its key, a digest of the judge's identity, the prompt
template's version and the exact messages (so the question and the answers).
A shard is a JSON Lines file of records ``{key, text, logprobs}`` written
atomically; a rerun reuses a shard only when it holds exactly the keys asked
for, so a changed judge, template or answer re-judges that shard and nothing
else is trusted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pipeline_lib.benchmarks.judge import Judge, LocalJudge
from pipeline_lib.core import progress
from pipeline_lib.core.hashing import hash_json
from pipeline_lib.sampling.base import Message, Sampler
from pipeline_lib.sampling.replicas import run_shards
from pipeline_lib.store import atomic_write_text

SHARD_SIZE = 32
Mode = Literal["generate", "choose"]


@dataclass(frozen=True)
class JudgeRequest:
    messages: list[Message]
    version: str  # the prompt template's version
    mode: Mode = "generate"
    labels: tuple[str, ...] = ()  # choose: the labels whose log-probabilities are read
    prefix: str = ""  # choose: the judge's own words the labels follow (a rating after its explanation)

    def key(self, identity: dict[str, Any]) -> str:
        asked = {"mode": self.mode, "labels": self.labels, "messages": self.messages, "prefix": self.prefix}
        return hash_json({"judge": identity, "template": self.version, **asked})


def judge_all(
    judge: Judge, identity: dict[str, Any], requests: Sequence[JudgeRequest], scratch: Path
) -> tuple[list[dict], dict[str, Any]]:
    """Every request's record, in order, and how many were judged now and how many reused from finished shards.

    Shards to judge go through ``run_shards``: to whichever replica is free when
    a served judge has several (their stats are added to the counts).
    """
    scratch.mkdir(parents=True, exist_ok=True)
    shards: list[list[dict] | None] = []
    todo, jobs = [], []
    for index, first in enumerate(range(0, len(requests), SHARD_SIZE)):
        batch = requests[first : first + SHARD_SIZE]
        keys = [r.key(identity) for r in batch]
        shard = scratch / f"shard-{index:05d}.jsonl"
        shards.append(_read_shard(shard, keys))
        if shards[-1] is None:
            todo.append(index)
            jobs.append(partial(_judge_shard, judge, batch, keys, shard))
    sampler = judge.sampler if isinstance(judge, LocalJudge) else None
    progress.phase("judging", total=len(requests), done=sum(len(s) for s in shards if s is not None))
    made, replicas = run_shards(sampler, jobs, todo)
    for index, records in zip(todo, made, strict=True):
        shards[index] = records
    judged = sum(len(records) for records in made)
    return [r for records in shards for r in records], {"judged": judged, "reused": len(requests) - judged, **replicas}


def _judge_shard(
    judge: Judge, batch: Sequence[JudgeRequest], keys: list[str], shard: Path, sampler: Sampler | None
) -> list[dict]:
    """Judge one shard on ``sampler`` (one replica of a served judge; None: the judge as it is) and write it."""
    asking = judge.on(sampler) if isinstance(judge, LocalJudge) and sampler is not None else judge
    with progress.counted_by_caller():
        answers = _ask(asking, batch)
    done = [{"key": k, **fields} for k, fields in zip(keys, answers, strict=True)]
    atomic_write_text(shard, "".join(json.dumps(r, sort_keys=True) + "\n" for r in done))
    progress.advance(len(done))
    return done


def _ask(judge: Judge, batch: Sequence[JudgeRequest]) -> list[dict[str, Any]]:
    """One shard's answers; generate and choose requests go to the judge as two batches."""
    out: list[dict[str, Any] | None] = [None] * len(batch)
    for mode in ("generate", "choose"):
        at = [i for i, r in enumerate(batch) if r.mode == mode]
        if not at:
            continue
        conversations = [batch[i].messages for i in at]
        if mode == "generate":
            for i, text in zip(at, judge.generate(conversations), strict=True):
                out[i] = {"text": text, "logprobs": None}
        else:
            labels = batch[at[0]].labels
            if any(batch[i].labels != labels for i in at):
                raise ValueError("one shard's choose requests must share their labels")
            prefixes = [batch[i].prefix for i in at]
            for i, choice in zip(at, judge.choose(conversations, labels, prefixes), strict=True):
                out[i] = {"text": choice.text, "logprobs": choice.logprobs}
    return [r for r in out if r is not None]


def _read_shard(shard: Path, keys: list[str]) -> list[dict] | None:
    try:
        records = [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return records if [r.get("key") for r in records] == keys else None
