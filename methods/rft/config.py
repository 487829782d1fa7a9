"""The ``rft`` section: which of the policy's samples rejection-sampling fine-tuning keeps."""

from __future__ import annotations

from pydantic import Field

from pipeline_lib.core.section import Section


class RftConfig(Section):
    min_score: float = Field(1.0, ge=0.0, le=1.0, description="a sample is kept when the verifier scores it at least this")
    max_per_prompt: int | None = Field(1, ge=1, description="distinct kept samples per prompt; null: every one that passes")
