"""How the agent plays and learns (AgentOptions) and the named ablations of METHODS.md §6."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pipeline_lib.core.errors import UserError

Mode = Literal["single", "lookahead"]
MODES: tuple[str, ...] = ("single", "lookahead")


@dataclass(frozen=True)
class AgentOptions:
    """Settings of one agent; defaults are the full CEL agent in single-call mode."""

    mode: Mode = "single"
    use_rules: bool = True
    use_playbook: bool = True
    learn: bool = True  # reflect after each episode; False keeps the knowledge frozen
    oracle_rules: bool = False  # the game's true rules and legend replace (and fix) the rules text
    # Single-call mode: ask for PREDICT blocks (the in-response lookahead); False is the no_lookahead ablation.
    predict_next: bool = True
    temperature: float = 0.7
    max_new_tokens: int = 256
    reflection_max_new_tokens: int = 512
    history_steps: int = 4
    trajectory_char_budget: int = 6000
    answer_prefill: bool = True
    max_lookahead_actions: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"agent mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.temperature < 0:
            raise UserError(f"agent temperature must be >= 0, got {self.temperature}")
        positive = ("max_new_tokens", "reflection_max_new_tokens", "trajectory_char_budget", "max_lookahead_actions")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"agent {name} must be >= 1, got {getattr(self, name)}")
        if self.history_steps < 0:
            raise UserError(f"agent history_steps must be >= 0, got {self.history_steps}")


# Each ablation changes only what its name says, on top of the options it is given.
_ABLATION_CHANGES: dict[str, dict[str, object]] = {
    "full": {},
    "frozen": {"learn": False},
    "zero_shot": {"learn": False, "use_rules": False, "use_playbook": False},
    "no_rules": {"use_rules": False},
    "no_playbook": {"use_playbook": False},
    "no_lookahead": {"predict_next": False},
    "oracle_rules": {"oracle_rules": True},
    "search": {"mode": "lookahead"},
}
ABLATIONS: tuple[str, ...] = tuple(_ABLATION_CHANGES)


def ablation(name: str, base: AgentOptions | None = None) -> AgentOptions:
    """The options of a named ablation, applied to ``base`` (default options when None)."""
    if name not in _ABLATION_CHANGES:
        raise UserError(f"unknown CEL ablation {name!r}; valid ablations: {', '.join(ABLATIONS)}")
    return dataclasses.replace(base or AgentOptions(), **_ABLATION_CHANGES[name])
