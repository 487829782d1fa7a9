"""The ``figa`` section: where the revised answers come from (METHODS.md §4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline_lib.core.section import Section

class FigaSourceConfig(Section):
    revised_from: Literal["reviser", "reference", "data"] = Field(
        "reviser",
        description="reviser: SEFT's reviser revises the policy's samples; reference: the suite's answers; "
        "data: the user's data.revisions pairs (the default when they are given)",
    )
