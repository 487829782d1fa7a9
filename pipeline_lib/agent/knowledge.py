"""The agent's two documents (rules and playbook) and what of them a prompt shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline_lib.agent.options import AgentOptions


@dataclass(frozen=True)
class Knowledge:
    """Rules: the agent's model of the game's dynamics. Playbook: its strategy. Both start empty."""

    rules: str = ""
    playbook: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Knowledge:
        return cls(rules=str(data.get("rules", "")), playbook=str(data.get("playbook", "")))


@dataclass(frozen=True)
class PromptContext:
    """Everything besides the trajectory so far that a decision prompt is built from.

    Kept with each trajectory so that the prompt of any of its steps can be
    rebuilt later (for SFT rows) exactly as the agent saw it. ``rules`` or
    ``playbook`` None means the prompt leaves that section out.
    """

    action_help: str
    rules: str | None
    playbook: str | None
    history_steps: int
    predict_next: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptContext:
        return cls(**data)


def prompt_context(env: Any, knowledge: Knowledge, options: AgentOptions) -> PromptContext:
    """What this agent shows of its knowledge while playing ``env``."""
    if options.oracle_rules:
        oracle, legend = env.oracle_rules().strip(), env.legend().strip()
        rules: str | None = oracle if legend in oracle else f"{oracle}\n{legend}"
    else:
        rules = knowledge.rules if options.use_rules else None
    return PromptContext(
        action_help=env.action_help(),
        rules=rules,
        playbook=knowledge.playbook if options.use_playbook else None,
        history_steps=options.history_steps,
        predict_next=options.predict_next,
    )
