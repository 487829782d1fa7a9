"""SEFT's adaptive reviser: decision labels, the prompt template, output parsing and training data.

Pure Python (no torch): the flows build reviser data and parse reviser
generations with it; training and sampling live elsewhere.
"""

from pipeline_lib.revision.decisions import DECISIONS, decision_counts, label_decision
from pipeline_lib.revision.examples import (
    ReviserExample,
    examples_from_preference,
    examples_from_scored_samples,
    text_gap,
)
from pipeline_lib.revision.parsing import MALFORMED_REASONS, ParsedRevision, enhanced_target, parse_reviser_output
from pipeline_lib.revision.template import render_dialogue, reviser_messages, reviser_target
from pipeline_lib.revision.training import balance_decisions, to_chat_rows, warmup_examples

__all__ = [
    "DECISIONS",
    "MALFORMED_REASONS",
    "ParsedRevision",
    "ReviserExample",
    "balance_decisions",
    "decision_counts",
    "enhanced_target",
    "examples_from_preference",
    "examples_from_scored_samples",
    "label_decision",
    "parse_reviser_output",
    "render_dialogue",
    "reviser_messages",
    "reviser_target",
    "text_gap",
    "to_chat_rows",
    "warmup_examples",
]
