"""Pairwise preference against a baseline, AlpacaEval 2.0's way: win rate and length-controlled win rate.

Each prompt's two outputs (the round's model, the baseline) are shown to the
judge with AlpacaEval's prompt, in both orders or in one order chosen by a
coin seeded by the prompt. The preference is read from the judge's
log-probabilities of the labels ``m`` and ``M`` (the weighted annotator), or
parsed from a generated label. Both orders of one prompt are averaged, which
cancels a judge's constant pull toward one position; their disagreement is
the position-bias figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.benchmarks.judging import JudgeRequest
from pipeline_lib.benchmarks.length_control import length_controlled_win_rate
from pipeline_lib.benchmarks.parsing import (
    Judgment,
    alpaca_choice_slot,
    combine_orders,
    model_preference,
    parse_alpaca_choice,
    position_bias,
    preference_from_logprobs,
    slot_b_score,
)
from pipeline_lib.benchmarks.prompts import ALPACA_LABELS, AlpacaTemplate, alpaca_judge_messages, alpaca_switched
from pipeline_lib.core.errors import UserError
from pipeline_lib.data.config import DataSource
from pipeline_lib.data.items import PromptItem
from pipeline_lib.data.loaders import load_rows
from pipeline_lib.reporting.metrics import metric
from pipeline_lib.sampling import samples_table
from pipeline_lib.sampling.base import Sample

JUDGMENTS_FILE = "judgments.parquet"
Slot = Literal["A", "B"]


def _load(source: DataSource, schema: str) -> Any:
    return load_rows(source.source, schema, source.columns or None, split=source.split, limit=source.limit,
                     format=source.format, name=source.name, revision=source.revision)  # fmt: skip


def prompt_rows(source: DataSource, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The prompt set as items (id, prompt, messages), its first ``limit``; and what loading skipped."""
    loaded = _load(source, "prompt")
    rows = [{"id": r["id"], "prompt": r["prompt"], "messages": r["messages"]} for r in loaded.rows]
    seen: set[str] = set()
    unique = [r for r in rows if not (r["id"] in seen or seen.add(r["id"]))]
    kept = unique[:limit] if limit else unique
    return kept, {"read": loaded.n_read, "kept": len(kept), "skipped": dict(loaded.skipped), "repeated": len(rows) - len(unique)}


def baseline_samples(source: DataSource, items: list[PromptItem], out_file: Path) -> dict[str, int]:
    """The baseline's outputs as a samples file, joined to the items by prompt text; items without one are counted."""
    by_prompt: dict[str, str] = {}
    for row in _load(source, "sft").rows:
        by_prompt.setdefault(row["prompt"].strip(), row["response"])
    found = [(i, item) for i, item in enumerate(items) if item.prompt.strip() in by_prompt]
    if not found:
        raise UserError(f"baseline outputs {source.source}: no row's prompt matches any of the {len(items)} prompts")
    ids = [item.id for item in items]
    samples = [Sample(i, 0, by_prompt[item.prompt.strip()], 0, 0, "stop") for i, item in found]
    pq.write_table(samples_table(ids, samples), out_file)
    return {"baseline_rows": len(found), "prompts_without_baseline": len(items) - len(found)}


def texts(samples_file: Path) -> dict[str, str]:
    table = pq.read_table(samples_file, columns=["prompt_id", "sample_index", "text"]).to_pylist()
    return {r["prompt_id"]: r["text"] for r in table if r["sample_index"] == 0}


def model_slots(prompt_id: str, orders: str, seed: int) -> tuple[Slot, ...]:
    """Where the model's output is shown: both slots, or AlpacaEval's seeded coin (baseline first unless it says switch)."""
    if orders == "both":
        return ("A", "B")
    return ("A",) if alpaca_switched(prompt_id, seed) else ("B",)


def pairwise_requests(
    template: AlpacaTemplate, items: list[PromptItem], model: dict[str, str], baseline: dict[str, str],
    orders: str, mode: str, seed: int,
) -> list[tuple[dict[str, Any], JudgeRequest]]:  # fmt: skip
    """(row, request) for every prompt both sides answered, in each order asked for."""
    out = []
    for item in items:
        if item.id not in model or item.id not in baseline:
            continue
        for slot in model_slots(item.id, orders, seed):
            first, second = (model[item.id], baseline[item.id]) if slot == "A" else (baseline[item.id], model[item.id])
            messages = alpaca_judge_messages(template, item.prompt, first, second)
            request = JudgeRequest(messages, template.version, "choose" if mode == "logprobs" else "generate",
                                   ALPACA_LABELS if mode == "logprobs" else ())  # fmt: skip
            out.append(({"prompt_id": item.id, "instruction": item.prompt, "model_slot": slot,
                         "model_output": model[item.id], "baseline_output": baseline[item.id]}, request))  # fmt: skip
    return out


def judgment(record: dict[str, Any]) -> Judgment:
    """One order's judgment as P(slot B preferred) from log-probabilities, else the parsed label, else None."""
    logprobs = record.get("logprobs")
    if logprobs:
        found = preference_from_logprobs(logprobs.get("m"), logprobs.get("M"))
        if found is not None:
            return found
    return alpaca_choice_slot(parse_alpaca_choice(record.get("text")))


def judged_rows(rows: list[dict[str, Any]], records: list[dict]) -> list[dict[str, Any]]:
    out = []
    for row, record in zip(rows, records, strict=True):
        j = judgment(record)
        out.append({**row, "judge_output": record["text"], "slot_b": slot_b_score(j), "from_logprobs": isinstance(j, float),
                    "preference": model_preference(j, row["model_slot"])})  # fmt: skip
    return out


def _judgment(row: dict[str, Any]) -> Judgment:
    """A stored row back as the judgment it was: a probability, or the verdict a parsed label gave."""
    value = row["slot_b"]
    if value is None or row["from_logprobs"]:
        return value
    return {0.0: "A", 0.5: "tie", 1.0: "B"}[value]  # type: ignore[return-value]


def _by_prompt(judged: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    per_prompt: dict[str, list[dict[str, Any]]] = {}
    for row in judged:
        per_prompt.setdefault(row["prompt_id"], []).append(row)
    return per_prompt


def prompt_preferences(judged: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each prompt's preference for the model: FastChat's rule for two verdicts, the mean of two probabilities,
    the one order's preference; None when an order did not parse (FastChat drops the pair)."""
    out = {}
    for prompt, rows in _by_prompt(judged).items():
        by_slot = {r["model_slot"]: _judgment(r) for r in rows}
        out[prompt] = combine_orders(by_slot["A"], by_slot["B"]) if len(rows) == 2 else rows[0]["preference"]
    return out


def pairwise_metrics(judged: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Win rate (ties ½), LC win rate, both mean lengths, its interval, parse failures and position bias."""
    per_prompt = _by_prompt(judged)
    by_prompt = prompt_preferences(judged)
    preferences, model_len, base_len = [], [], []
    for prompt, rows in per_prompt.items():
        preferences.append(by_prompt[prompt])
        model_len.append(float(len(rows[0]["model_output"])))
        base_len.append(float(len(rows[0]["baseline_output"])))
    failures = sum(r["preference"] is None for r in judged)
    out = {metric(prefix, "judgments"): float(len(judged)), metric(prefix, "parse_failures"): float(failures),
           metric(prefix, "prompts"): float(len(per_prompt))}  # fmt: skip
    usable = [i for i, p in enumerate(preferences) if p is not None]
    if usable:
        lc = length_controlled_win_rate([preferences[i] for i in usable], [model_len[i] for i in usable], [base_len[i] for i in usable])
        out |= {
            metric(prefix, "win_rate"): lc.win_rate, metric(prefix, "lc_win_rate"): lc.lc_win_rate,
            metric(prefix, "model_length"): lc.mean_model_length, metric(prefix, "baseline_length"): lc.mean_baseline_length,
        }  # fmt: skip
    both = [(rows[0], rows[1]) for rows in per_prompt.values() if len(rows) == 2]
    if both:
        bias = position_bias((_judgment(a), _judgment(b)) for a, b in both)
        if bias.n:
            out |= {metric(prefix, "position_follows"): bias.follows_position, metric(prefix, "slot_b_rate"): bias.slot_b_rate}
    return out


def write_judged(judged: list[dict[str, Any]], out: Path) -> None:
    pq.write_table(pa.Table.from_pylist(judged), out / JUDGMENTS_FILE)
