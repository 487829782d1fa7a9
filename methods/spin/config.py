"""The ``spin`` section (METHODS.md §7)."""

from __future__ import annotations

from pydantic import Field

from pipeline_lib.core.section import Section

class SpinConfig(Section):
    iterations: int = Field(2, ge=1, description="K self-play iterations, each evaluated")
    last_beta: float | None = Field(
        None, gt=0.0, description="β of the last iteration (the paper: 5.0); null: train.preference.beta"
    )
