"""MT-Bench: two-turn answers at FastChat's per-category temperatures, single-answer grading, and its metrics.

Answers: turn 1 for every question, then turn 2 with turn 1's answer in the
conversation, each turn sampled in groups of equal temperature through the
resumable sampling shards. Grading follows FastChat's ``gen_judgment``
(single mode): ``single-v1`` for open questions, ``single-math-v1`` with the
GPT-4 reference for math, reasoning and coding, their ``-multi-turn`` forms
for turn 2; the rating is read with ``[[r]]`` and its ``[r]`` fallback. A
judgment that does not parse is counted, never averaged as 0.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.benchmarks.judging import JudgeRequest
from pipeline_lib.benchmarks.parsing import parse_rating
from pipeline_lib.benchmarks.prompts import REFERENCE_CATEGORIES, JudgePrompt, Question, single_judge_messages
from pipeline_lib.core.errors import UserError
from pipeline_lib.reporting.metrics import MT_BENCH, metric
from pipeline_lib.sampling import Sampler, SamplingParams, render_chat, sample_to_parquet

PREFIX = MT_BENCH
ANSWERS_FILE = "answers.parquet"
JUDGMENTS_FILE = "judgments.parquet"
TURNS = (1, 2)


def take_questions(questions: list[Question], limit: int | None, source: str) -> list[Question]:
    bad = [q.question_id for q in questions if len(q.turns) != 2]
    if bad:
        raise UserError(f"{source}: MT-Bench questions need two turns; questions {bad[:5]} do not")
    return questions[:limit] if limit else questions


def answer_questions(
    sampler: Sampler, tokenizer: Any, questions: list[Question], max_new_tokens: int, seed: int, out: Path, scratch: Path
) -> dict[str, Any]:
    """Both turns of every question into ``out/answers.parquet``; returns token and time totals."""
    answers: dict[int, list[str]] = {q.question_id: [] for q in questions}
    tokens: dict[int, list[int]] = {q.question_id: [] for q in questions}
    totals: dict[str, float] = defaultdict(float)
    for turn in TURNS:
        by_temperature: dict[float, list[Question]] = defaultdict(list)
        for q in questions:
            by_temperature[q.temperature].append(q)
        for temperature, group in sorted(by_temperature.items()):
            conversations = [_conversation(q, answers[q.question_id], turn) for q in group]
            rendered = [render_chat(tokenizer, c) for c in conversations]
            params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
            file = scratch / f"turn{turn}-t{temperature:g}.parquet"
            stats = sample_to_parquet(sampler, [str(q.question_id) for q in group], rendered, params, file, scratch / file.stem)
            for row in pq.read_table(file).to_pylist():
                answers[int(row["prompt_id"])].append(row["text"])
                tokens[int(row["prompt_id"])].append(row["completion_tokens"])
            totals["completion_tokens"] += stats["completion_tokens"]
            totals["seconds"] += stats["seconds"]
    table = pa.Table.from_pylist(
        [
            {"question_id": q.question_id, "category": q.category, "turns": list(q.turns), "answers": answers[q.question_id],
             "completion_tokens": tokens[q.question_id]}
            for q in questions
        ]
    )  # fmt: skip
    pq.write_table(table, out / ANSWERS_FILE)
    return {"questions": len(questions), **{k: round(v, 3) for k, v in totals.items()}}


def _conversation(question: Question, earlier: list[str], turn: int) -> list[dict[str, str]]:
    messages = []
    for i in range(turn - 1):
        messages += [{"role": "user", "content": question.turns[i]}, {"role": "assistant", "content": earlier[i]}]
    return [*messages, {"role": "user", "content": question.turns[turn - 1]}]


def read_answers(folder: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(Path(folder) / ANSWERS_FILE).to_pylist()


def grading_requests(
    prompts: dict[str, JudgePrompt], answers: list[dict[str, Any]], references: dict[int, tuple[str, ...]]
) -> list[tuple[dict[str, Any], JudgeRequest]]:
    """(row, request) for each question and turn: FastChat's single grading prompts."""
    out = []
    for row in answers:
        question = Question(row["question_id"], row["category"], tuple(row["turns"]))
        for turn in TURNS:
            built = single_judge_messages(prompts, question, row["answers"], turn, references.get(question.question_id))
            request = JudgeRequest(built.messages, built.version)
            out.append(({"question_id": question.question_id, "category": question.category, "turn": turn,
                         "question": question.turns[turn - 1], "answer": row["answers"][turn - 1], "template": built.template}, request))  # fmt: skip
    return out


def missing_references(answers: list[dict[str, Any]], references: dict[int, tuple[str, ...]]) -> list[int]:
    """Questions graded against a reference (math, reasoning, coding) that lack one for both turns."""
    return [
        r["question_id"] for r in answers
        if r["category"] in REFERENCE_CATEGORIES and len(references.get(r["question_id"], ())) < 2
    ]  # fmt: skip


def graded_rows(rows: list[dict[str, Any]], records: list[dict]) -> list[dict[str, Any]]:
    out = []
    for row, record in zip(rows, records, strict=True):
        rating = parse_rating(record["text"])
        out.append({**row, "judgment": record["text"], "rating": rating, "rated_by": "parsed" if rating is not None else None})
    return out


# The rating a judge gives after its own words when it wrote no [[rating]]. Digits are single tokens in
# most tokenizers, and one pass reads all of 1-9 as the next token; "1" may begin "10", so where it wins
# the next token ("]]" or "0") splits its probability between 1 and 10.
RATING_LABELS = tuple(str(r) for r in range(1, 10))
AFTER_ONE = ("]]", "0")
RATING_CUE = "\n\nRating: [["
Pending = list[tuple[int, JudgeRequest, dict[str, float]]]


def fallback_requests(graded: list[dict[str, Any]], requests: list[JudgeRequest]) -> list[tuple[int, JudgeRequest]]:
    """(row index, request) asking for the first digit of the rating of each judgment that did not parse."""
    return [
        (i, dataclasses.replace(request, mode="choose", labels=RATING_LABELS, prefix=row["judgment"] + RATING_CUE))
        for i, (row, request) in enumerate(zip(graded, requests, strict=True))
        if row["rating"] is None
    ]


def apply_fallback(graded: list[dict[str, Any]], asked: list[tuple[int, JudgeRequest]], records: list[dict]) -> Pending:
    """Rate each row by its likeliest first digit; return the rows where "1" won, to be told apart from 10."""
    pending = []
    for (i, request), record in zip(asked, records, strict=True):
        logprobs = record.get("logprobs")
        if not logprobs or any(v is None for v in logprobs.values()):
            continue
        best = max(RATING_LABELS, key=lambda label: logprobs[label])
        graded[i] |= {"rating": float(best), "rated_by": "fallback"}
        if best == "1":
            pending.append((i, dataclasses.replace(request, labels=AFTER_ONE, prefix=request.prefix + "1"), logprobs))
    return pending


def apply_ten(graded: list[dict[str, Any]], pending: Pending, records: list[dict]) -> None:
    """1 or 10, or the runner-up digit when "1" was only ahead because it also carries 10's probability."""
    for (i, _, first), record in zip(pending, records, strict=True):
        after = record.get("logprobs") or {}
        if any(after.get(label) is None for label in AFTER_ONE):
            continue
        options = {1.0: first["1"] + after["]]"], 10.0: first["1"] + after["0"]}
        options |= {float(d): first[d] for d in RATING_LABELS if d != "1"}
        graded[i]["rating"] = max(options, key=options.__getitem__)


def mt_bench_metrics(graded: list[dict[str, Any]]) -> dict[str, float]:
    """``mt_bench/score`` (the mean rating over parsed judgments), per turn and category, and the parse failures."""
    rated = [r for r in graded if r["rating"] is not None]
    out = {
        metric(PREFIX, "judgments"): float(len(graded)),
        metric(PREFIX, "parse_failures"): float(sum(r["rated_by"] != "parsed" for r in graded)),
        metric(PREFIX, "fallback_ratings"): float(sum(r["rated_by"] == "fallback" for r in graded)),
        metric(PREFIX, "unrated"): float(len(graded) - len(rated)),
    }
    if rated:
        out[metric(PREFIX, "score")] = _mean(r["rating"] for r in rated)
    for turn in TURNS:
        values = [r["rating"] for r in rated if r["turn"] == turn]
        if values:
            out[metric(PREFIX, f"score_turn{turn}")] = _mean(values)
    for category in sorted({r["category"] for r in rated}):
        out[metric(PREFIX, "category", category)] = _mean(r["rating"] for r in rated if r["category"] == category)
    return out


def _mean(values: Any) -> float:
    values = list(values)
    return float(sum(values) / len(values))


def write_graded(graded: list[dict[str, Any]], out: Path) -> None:
    pq.write_table(pa.Table.from_pylist(graded), out / JUDGMENTS_FILE)
