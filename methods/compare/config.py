"""The ``compare`` section: the contestants of compare-methods."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline_lib.core.section import Section


class MethodVariant(Section):
    """One contestant of ``compare-methods``: a method and the overrides that make it this variant."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    method: str
    overrides: list[str] = Field(
        default_factory=list, description="a.b=value overrides; @base and @<label> name the start model or a variant's result"
    )

    @field_validator("method")
    @classmethod
    def _contestant(cls, method: str) -> str:
        from methods import METHODS  # the registry imports this module

        contestants = [m.name for m in METHODS.values() if m.contestant]
        if method not in contestants:
            raise ValueError(f"{method!r} cannot be compared; choose from {contestants}")
        return method


class CompareConfig(Section):
    methods: list[MethodVariant] = Field(min_length=1)
    token_budget: int | None = Field(
        None, ge=1, description="training tokens per method, split evenly over its rounds; null: each recipe's epochs"
    )

    @field_validator("methods")
    @classmethod
    def _unique_labels(cls, methods: list[MethodVariant]) -> list[MethodVariant]:
        labels = [m.label for m in methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        return methods
