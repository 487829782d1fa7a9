"""The model a recipe starts from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline_lib.core.section import Section

class ModelConfig(Section):
    ref: str = Field("smollm2-135m-instruct", description="alias, local HF folder or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: str | None = Field(
        None, description="a Jinja chat template, or a file holding one: for a model without one, or to replace its own"
    )
