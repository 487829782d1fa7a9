"""Reading the reviser's generated text back into (decision, revision).

Format: the first non-blank line is "Decision: <none|minor|major>", the next
non-blank line starts with "Revision:", and the revision is everything after
that colon. The words and the decision are case-insensitive and spaces around
":" are allowed, but anything before the decision line (prose, a preamble) is
malformed: the decision-first position is what the template trains, and
searching further would also match "Decision:" quoted inside a revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline_lib.revision.decisions import DECISIONS

_DECISION_LINE = re.compile(r"decision\s*:\s*(.*)", re.IGNORECASE)
_REVISION_HEAD = re.compile(r"revision\s*:", re.IGNORECASE)

# Stable reason codes, reported as counts per round.
NO_DECISION = "no-decision"
UNKNOWN_DECISION = "unknown-decision"
NO_REVISION = "no-revision"
EMPTY_REVISION = "empty-revision"
TRUNCATED = "truncated"
MALFORMED_REASONS = (NO_DECISION, UNKNOWN_DECISION, NO_REVISION, EMPTY_REVISION, TRUNCATED)


@dataclass(frozen=True)
class ParsedRevision:
    decision: str | None
    revision: str | None
    malformed: str | None

    @property
    def ok(self) -> bool:
        return self.malformed is None


def _malformed(reason: str) -> ParsedRevision:
    return ParsedRevision(None, None, reason)


def parse_reviser_output(text: str, finish_reason: str | None = None) -> ParsedRevision:
    """Parse one reviser generation; ``finish_reason`` is the sampler's ("stop", "length", ...).

    A truncated ``none`` stays usable (its enhanced target is the original
    response, whatever revision text was cut off), so it parses with the
    revision it got, or None if the cut came before any revision text.
    """
    first, _, rest = text.lstrip().partition("\n")
    match = _DECISION_LINE.fullmatch(first.strip())
    if match is None:
        return _malformed(NO_DECISION)
    decision = match.group(1).strip().lower()
    if decision not in DECISIONS:
        return _malformed(UNKNOWN_DECISION)
    truncated = finish_reason == "length"
    if truncated and decision != "none":
        return _malformed(TRUNCATED)
    rest = rest.lstrip()
    head = _REVISION_HEAD.match(rest)
    if head is None:
        return ParsedRevision(decision, None, None) if truncated else _malformed(NO_REVISION)
    revision = rest[head.end() :].strip()
    if not revision:
        return ParsedRevision(decision, None, None) if truncated else _malformed(EMPTY_REVISION)
    return ParsedRevision(decision, revision, None)


def enhanced_target(parsed: ParsedRevision, response: str) -> str | None:
    """SEFT's training target for one sample: the response if ``none``, the revision otherwise, None if malformed."""
    if parsed.malformed is not None:
        return None
    return response if parsed.decision == "none" else parsed.revision
