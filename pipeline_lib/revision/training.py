"""Turning labelled reviser examples into the reviser's training set."""

from __future__ import annotations

import math
import random

from pipeline_lib.revision.decisions import DECISIONS
from pipeline_lib.revision.examples import ReviserExample
from pipeline_lib.revision.template import reviser_messages, reviser_target


def balance_decisions(examples: list[ReviserExample], seed: int, max_ratio: float = 1.0) -> list[ReviserExample]:
    """Downsample each decision class to at most max_ratio x the smallest non-empty class.

    Which examples stay is drawn with random.Random(seed); the kept ones keep
    their input order. max_ratio <= 0 or infinite means no balancing.
    """
    if math.isnan(max_ratio):
        raise ValueError("max_ratio is NaN")
    if max_ratio <= 0 or math.isinf(max_ratio):
        return list(examples)
    by_class = {decision: [i for i, ex in enumerate(examples) if ex.decision == decision] for decision in DECISIONS}
    sizes = [len(indices) for indices in by_class.values() if indices]
    if not sizes:
        return []
    cap = max(1, math.floor(max_ratio * min(sizes)))
    rng = random.Random(seed)
    keep: set[int] = set()
    for indices in by_class.values():
        keep.update(indices if len(indices) <= cap else rng.sample(indices, cap))
    return [ex for i, ex in enumerate(examples) if i in keep]


def warmup_examples(examples: list[ReviserExample]) -> list[ReviserExample]:
    """The plain-reviser warm-up set (y_low -> y_high): every example that changes its response."""
    return [ex for ex in examples if ex.decision != "none"]


def to_chat_rows(examples: list[ReviserExample]) -> list[dict]:
    """TRL conversational prompt-completion rows; the loss falls on the completion (the target) only."""
    return [
        {
            "prompt": reviser_messages(ex.prompt, ex.response),
            "completion": [{"role": "assistant", "content": reviser_target(ex.decision, ex.target)}],
            "decision": ex.decision,
            "source": ex.source,
        }
        for ex in examples
    ]
