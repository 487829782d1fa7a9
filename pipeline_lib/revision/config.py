"""The ``reviser`` section, read by SEFT and by FIGA's revised answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_lib.core.section import Section
from pipeline_lib.training.config import FigaConfig, PreferenceConfig, TrainConfig

RevisionDecision = Literal["none", "minor", "major"]


class ReviserConfig(Section):
    """SEFT's adaptive reviser: where its graded training data come from and how it is trained.

    Source (a) is the base policy's samples on ``n_prompts`` suite train
    prompts, scored by the verifiers; source (b) is the recipe's
    ``data.preference`` (chosen/rejected pairs).
    """

    model: str | None = Field(None, description="model to train as the reviser; default: the policy's base model")
    n_prompts: int = Field(64, ge=0, description="suite train prompts whose policy samples make source (a)")
    samples_per_prompt: int = Field(4, ge=1)
    temperature: float | None = Field(
        None, ge=0.0, description="sampling temperature for source (a); null: sampler.temperature"
    )
    target: Literal["reference", "best"] = Field("reference", description="revision target for source (a)")
    # Moved to data.preference; kept as an always-null key so existing recipes keep their config hash.
    preference: None = Field(None, description="moved: set data.preference")
    tau_none: float = Field(0.0, ge=0.0, description="score gap up to which a response needs no change")
    tau_major: float = Field(0.5, ge=0.0, description="score gap above which a response needs a major revision")
    similar_ratio: float = Field(
        0.4, gt=0.0, le=1.0, description="unscored pairs: a rejected reply at least this similar to chosen is minor"
    )
    balance_ratio: float = Field(1.0, ge=0.0, description="cap each decision class at this times the smallest; 0: off")
    warmup: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1.0))
    warmup_rows: int | None = Field(None, ge=1, description="cap on warm-up examples, a seeded draw; null: all")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1.0))
    max_new_tokens: int = Field(128, ge=1, description="revision length limit; a longer revision counts as malformed")
    batch_size: int = Field(16, ge=1)

    @field_validator("preference", mode="before")
    @classmethod
    def _moved(cls, value: object) -> None:
        if value is not None:
            raise ValueError("the reviser's preference set moved to data.preference (same keys: source, columns, split, limit)")
        return None

    @model_validator(mode="after")
    def _trains_on_revisions(self) -> ReviserConfig:
        # The reviser's rows are prompt/completion pairs: only SFT and IFT can train on them,
        # so the preference and FIGA settings of its phases could never be used.
        for phase in ("warmup", "train"):
            train = getattr(self, phase)
            if train.objective not in ("sft", "ift"):
                raise ValueError(f"{phase}.objective must be 'sft' or 'ift' (the reviser learns from revisions), not {train.objective!r}")
            for section, default in (("preference", PreferenceConfig()), ("figa", FigaConfig())):
                if getattr(train, section) != default:
                    raise ValueError(f"{phase}.{section} is not used: the reviser trains with objective 'sft' or 'ift'")
        return self

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> ReviserConfig:
        if self.tau_none > self.tau_major:
            raise ValueError(f"tau_none ({self.tau_none}) must not exceed tau_major ({self.tau_major})")
        return self
