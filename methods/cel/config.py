"""The ``cel`` section (METHODS.md §6)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.section import Section

# CEL (METHODS.md §6). The names match pipeline_lib.agent.ABLATIONS (a test
# keeps them equal); they are spelled out here so reading a recipe loads no agent code.
CelAblation = Literal["full", "frozen", "zero_shot", "no_rules", "no_playbook", "no_lookahead", "oracle_rules", "search"]


class CelSftConfig(Section):
    """The optional outcome-filtered SFT stage: train on the learning episodes that succeeded, then re-evaluate."""

    enabled: bool = False
    min_examples: int = Field(1, ge=1, description="fewer valid steps from successful episodes: skip training")


class CelConfig(Section):
    game: Literal["frozen_lake", "sokoban", "minesweeper"] = "frozen_lake"
    knobs: dict[str, Any] = Field(default_factory=dict, description="level-generator settings, e.g. size, boxes, mines")
    symbols: Literal["classic", "abstract"] = "classic"
    max_steps: int | None = Field(None, ge=1, description="step budget per episode; null: the game's default")
    ablation: CelAblation = "full"
    mode: Literal["single", "lookahead"] | None = Field(None, description="null: the ablation's (single, search: lookahead)")
    learn_episodes: int = Field(10, ge=0, description="episodes of play then reflection")
    eval_episodes: int = Field(10, ge=1, description="held-out layouts played with frozen knowledge")
    baseline: bool = Field(True, description="round 0: the held-out layouts with empty knowledge (zero-shot)")
    temperature: float = Field(0.7, ge=0.0, description="decisions while learning")
    eval_temperature: float = Field(0.0, ge=0.0, description="decisions on held-out layouts")
    max_new_tokens: int = Field(256, ge=8)
    reflection_max_new_tokens: int = Field(512, ge=16)
    history_steps: int = Field(4, ge=0, description="recent steps shown in each decision prompt")
    trajectory_char_budget: int = Field(6000, ge=500, description="reflection prompt: longer trajectories lose middle steps")
    answer_prefill: bool = Field(True, description="a response without an ACTION line is continued after 'ACTION:'")
    max_lookahead_actions: int = Field(8, ge=1)
    initial_rules: str = ""
    initial_playbook: str = ""
    sft: CelSftConfig = Field(default_factory=CelSftConfig)

    @model_validator(mode="after")
    def _playable(self) -> CelConfig:
        # Building one level names a bad knob now, not an hour into the run.
        from pipeline_lib.games import make_env

        try:
            make_env(self.game, symbols=self.symbols, max_steps=self.max_steps, **self.knobs).reset(0)
        except UserError as err:
            raise ValueError(str(err)) from None
        return self
