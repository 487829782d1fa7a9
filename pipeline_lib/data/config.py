"""An external dataset as a recipe names it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline_lib.core.section import Section

class DataConfig(Section):
    """An external dataset; `source` is a hub id or a local file or folder."""

    source: str
    kind: Literal["prompt", "answer", "sft", "preference", "messages"] = "prompt"
    format: Literal["auto", "hh-rlhf", "mt-bench", "plain"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    split: str = "train"
    limit: int | None = Field(None, ge=1)
