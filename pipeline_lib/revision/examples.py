"""Decision-labelled reviser training examples, from scored samples or from preference pairs."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Indel

from pipeline_lib.core.errors import UserError
from pipeline_lib.revision.decisions import label_decision
from pipeline_lib.revision.template import Prompt

SCORED_COLUMNS = ("prompt_id", "prompt", "response", "reference", "score", "sample_index")
TARGETS = ("reference", "best")


@dataclass(frozen=True)
class ReviserExample:
    """(prompt, y_in, decision, y_target); for ``none`` the target is y_in itself."""

    prompt: Prompt
    response: str
    decision: str
    target: str
    source: str
    gap: float


def _example(
    prompt: Prompt, response: str, best: str, gap: float, taus: tuple[float, float], source: str
) -> ReviserExample:
    decision = label_decision(gap, *taus)
    return ReviserExample(prompt, response, decision, response if decision == "none" else best, source, gap)


def examples_from_scored_samples(
    rows: list[dict],
    tau_none: float,
    tau_major: float,
    target: str = "reference",
    skipped: Counter[str] | None = None,
) -> list[ReviserExample]:
    """Source (a): the policy's own samples scored by the verifier (the columns of the suite's scores.parquet).

    target="reference": the best answer is the item's reference, score 1.0.
    target="best": the best is the prompt's highest-scoring sample (ties go to
    the lowest sample_index), so the best sample itself gets gap 0.
    Samples whose best text is empty are skipped and counted in ``skipped``
    under "empty-best". Output is ordered by (prompt_id, sample_index).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown reviser target {target!r}; expected one of {', '.join(TARGETS)}")
    by_prompt: dict[Any, list[dict]] = defaultdict(list)
    for row in rows:
        missing = [name for name in SCORED_COLUMNS if name not in row]
        if missing:
            raise ValueError(f"scored sample row lacks column(s) {', '.join(missing)}")
        if not 0.0 <= row["score"] <= 1.0:
            raise ValueError(f"score {row['score']!r} of prompt {row['prompt_id']!r} is outside [0, 1]")
        by_prompt[row["prompt_id"]].append(row)
    examples = []
    for prompt_id in sorted(by_prompt):
        samples = sorted(by_prompt[prompt_id], key=lambda row: row["sample_index"])
        if target == "reference":
            best, best_score = samples[0]["reference"], 1.0
        else:
            # max() keeps the first of equal scores, and samples are in sample_index order.
            top = max(samples, key=lambda row: row["score"])
            best, best_score = top["response"], top["score"]
        for row in samples:
            if not best.strip():
                if skipped is not None:
                    skipped["empty-best"] += 1
                continue
            gap = best_score - row["score"]
            examples.append(_example(row["prompt"], row["response"], best, gap, (tau_none, tau_major), "suite"))
    return examples


def text_gap(rejected: str, chosen: str) -> float:
    """Inferred gap for unscored pairs: the share of text that must change, 1 - Indel similarity.

    The similarity is rapidfuzz's normalised Indel similarity, difflib's
    SequenceMatcher.ratio() computed exactly (no junk heuristic).
    """
    return 1.0 - Indel.normalized_similarity(rejected, chosen)


def _row_name(row: Mapping[str, Any], index: int) -> str:
    return f"preference row {row.get('id', index)!s} (source row {row.get('source_row', index)})"


def _pair_scores(row: Mapping[str, Any], index: int) -> tuple[float, float] | None:
    """The row's chosen/rejected scores, top-level or in its metadata, or None when it has none."""
    metadata = row.get("metadata") if isinstance(row.get("metadata"), Mapping) else {}
    found = {
        key: row[key] if row.get(key) is not None else metadata.get(key) for key in ("chosen_score", "rejected_score")
    }
    present = [key for key, value in found.items() if value is not None]
    if not present:
        return None
    if len(present) == 1:
        raise UserError(f"{_row_name(row, index)} has {present[0]} but not the other score")
    try:
        chosen, rejected = float(found["chosen_score"]), float(found["rejected_score"])
    except (TypeError, ValueError):
        raise UserError(f"{_row_name(row, index)} has non-numeric chosen_score/rejected_score") from None
    if math.isnan(chosen) or math.isnan(rejected):
        raise UserError(f"{_row_name(row, index)} has a NaN chosen_score/rejected_score")
    return chosen, rejected


def _pair_prompt(row: Mapping[str, Any]) -> Prompt:
    """The dialogue when there is one, else the plain instruction."""
    messages = row.get("messages") or []
    if len(messages) > 1:
        return [{"role": message["role"], "content": message["content"]} for message in messages]
    return row.get("prompt") or (messages[0]["content"] if messages else "")


def _skip_reason(prompt: Prompt, chosen: str, rejected: str) -> str | None:
    if not prompt:
        return "empty-prompt"
    if not chosen.strip():
        return "empty-chosen"
    if not rejected.strip():
        return "empty-rejected"
    if chosen.strip() == rejected.strip():
        return "identical"
    return None


def examples_from_preference(
    rows: list[dict],
    tau_none: float,
    tau_major: float,
    source: str,
    similar_ratio: float = 0.6,
    skipped: Counter[str] | None = None,
) -> list[ReviserExample]:
    """Source (b): preference pairs in the normalised ``preference`` schema; two examples per pair.

    (chosen -> none, target chosen, gap 0) and (rejected -> decision, target chosen).
    With chosen_score/rejected_score (top-level keys, or in ``metadata``) the
    gap is chosen_score - rejected_score, labelled with tau_none/tau_major.
    Without scores (HH-RLHF) the gap is inferred, and this is our default, not
    the paper's: gap = text_gap(rejected, chosen), i.e. how much of the text
    must change. Text distance is not on the score scale, so its minor/major
    boundary is ``similar_ratio``: a rejected reply at least that similar to
    the chosen one needs a ``minor`` edit, a less similar one a ``major``
    rewrite, and one within tau_none of identical needs none (the thresholds
    used are tau_none and 1 - similar_ratio).
    Rows with an empty prompt, chosen or rejected, or with chosen == rejected
    (ignoring surrounding whitespace) are skipped and counted in ``skipped``.
    """
    if not 0.0 <= similar_ratio <= 1.0:
        raise ValueError(f"similar_ratio must lie in [0, 1], not {similar_ratio}")
    examples = []
    for index, row in enumerate(rows):
        prompt, chosen, rejected = _pair_prompt(row), row.get("chosen") or "", row.get("rejected") or ""
        reason = _skip_reason(prompt, chosen, rejected)
        if reason:
            if skipped is not None:
                skipped[reason] += 1
            continue
        scores = _pair_scores(row, index)
        if scores is None:
            gap, taus = text_gap(rejected, chosen), (tau_none, 1.0 - similar_ratio)
        else:
            gap, taus = scores[0] - scores[1], (tau_none, tau_major)
        examples.append(ReviserExample(prompt, chosen, "none", chosen, source, 0.0))
        examples.append(_example(prompt, rejected, chosen, gap, taus, source))
    return examples
