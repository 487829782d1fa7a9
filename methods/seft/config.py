"""The ``seft`` section (METHODS.md §1)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline_lib.core.section import Section
from pipeline_lib.revision.config import RevisionDecision

class SeftConfig(Section):
    rounds: int = Field(2, ge=1)
    pool_prompts: int = Field(64, ge=1, description="unannotated suite train prompts sampled per round")
    fresh_prompts: bool = Field(True, description="new pool prompts every round; false: the same pool each round")
    # Internal then external evolution: early rounds keep close to the
    # policy's own answers, later rounds accept heavier revisions.
    accept: list[list[RevisionDecision]] = Field(
        default_factory=lambda: [["none", "minor"], ["none", "minor", "major"]],
        description="decisions accepted as training targets, per round; the last entry repeats",
    )

    @field_validator("accept")
    @classmethod
    def _non_empty(cls, accept: list[list[str]]) -> list[list[str]]:
        if not accept or any(not decisions for decisions in accept):
            raise ValueError("give at least one round, each with at least one accepted decision")
        return accept

    def pool_start(self, round_index: int) -> int:
        """Where round ``round_index``'s prompts start, counted from the first pool prompt."""
        return (round_index - 1) * self.pool_prompts if self.fresh_prompts else 0

    def pool_end(self, round_index: int) -> int:
        return self.pool_start(round_index) + self.pool_prompts

    def accepted(self, round_index: int) -> list[str]:
        """The decisions round ``round_index`` (1-based) trains on."""
        return self.accept[min(round_index, len(self.accept)) - 1]
