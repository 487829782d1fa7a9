"""The built-in verifiable task suite: seeded prompts whose answers code can grade.

    items = generate_suite("eval", 70, seed=0)
    verdict = verify(items[0], "The answer is 42.")   # Verdict(score, reasons)
    report = summarize(items, responses)               # per-family mean / pass rate
"""

from pipeline_lib.suite.generate import DIFFICULTIES, FAMILIES, generate_suite, split_of
from pipeline_lib.suite.item import SuiteItem, Verdict
from pipeline_lib.suite.verify import summarize, summarize_scores, verify

__all__ = [
    "DIFFICULTIES",
    "FAMILIES",
    "SuiteItem",
    "Verdict",
    "generate_suite",
    "split_of",
    "summarize",
    "summarize_scores",
    "verify",
]
