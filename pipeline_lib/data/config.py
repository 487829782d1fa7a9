"""The recipe's ``data`` section: the user's datasets by role, and how they are prepared.

Each role takes one source or a list of sources (concatenated, each with its
own ``limit``). A method reads only its roles (the registry says which); a
role it leaves unset falls back to the built-in suite.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline_lib.core.section import Section

DATA_ROLES = ("prompts", "sft", "preference", "revisions")
SUITE = "suite"


class DataSource(Section):
    """One dataset: a local file or folder, a hub id (with ``name``, ``split``, ``revision``), or ``suite``."""

    source: str = Field(min_length=1)
    name: str | None = Field(None, description="the hub dataset's configuration")
    split: str = "train"
    revision: str | None = Field(None, description="the hub dataset's git revision; pins its content")
    format: Literal["auto", "hh-rlhf", "mt-bench", "plain"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="schema field -> source column")
    limit: int | None = Field(None, ge=1, description="keep at most this many rows of this source")

    @property
    def is_suite(self) -> bool:
        return self.source == SUITE


class Decontamination(Section):
    """Training rows sharing an n-gram of words with any evaluation prompt are removed."""

    ngram: int = Field(13, ge=1, description="n-gram length in words; an evaluation prompt shorter than this counts whole")
    enabled: bool = True


Sources = list[DataSource]


class DataConfig(Section):
    prompts: Sources | None = Field(None, description="unannotated prompts: SEFT's pool, the prompts methods sample on")
    sft: Sources | None = Field(None, description="prompt + response, or whole conversations: SFT, IFT, SPIN's real answers")
    preference: Sources | None = Field(None, description="chosen/rejected pairs: DPO offline, SEFT's reviser")
    revisions: Sources | None = Field(None, description="(original, revised) pairs: FIGA")
    dedupe: bool = Field(True, description="drop rows whose normalised text repeats an earlier row's")
    decontaminate: Decontamination = Field(default_factory=Decontamination)
    heldout: float = Field(0.0, ge=0.0, lt=1.0, description="share of each role's rows held out (seeded by the recipe's seed)")

    @model_validator(mode="before")
    @classmethod
    def _not_the_old_shape(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and ("source" in raw or "kind" in raw):
            raise ValueError(
                "data is now a set of datasets by role: write data.<role>: {source: ...} with role "
                f"{', '.join(DATA_ROLES)} (e.g. data.prompts.source=my_prompts.jsonl instead of data.source with kind 'prompt')"
            )
        return raw

    @field_validator(*DATA_ROLES, mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        # One source is written as a mapping (or just its path); several as a list of them.
        if isinstance(value, (dict, str)):
            value = [value]
        if isinstance(value, list):
            value = [{"source": item} if isinstance(item, str) else item for item in value]
            if not value:
                raise ValueError("give at least one source, or leave the role out")
        return value

    @field_validator(*DATA_ROLES)
    @classmethod
    def _suite_alone(cls, sources: Sources | None) -> Sources | None:
        if sources and len(sources) > 1 and any(source.is_suite for source in sources):
            raise ValueError("'suite' stands for the built-in suite on its own; it cannot be mixed with other sources")
        return sources

    def roles(self) -> dict[str, Sources]:
        """The roles the recipe sets to the user's data (``suite`` counts as unset)."""
        return {
            role: sources
            for role in DATA_ROLES
            if (sources := getattr(self, role)) and not sources[0].is_suite
        }

    def set_roles(self) -> list[str]:
        """Every role the recipe names, ``suite`` included."""
        return [role for role in DATA_ROLES if getattr(self, role)]
