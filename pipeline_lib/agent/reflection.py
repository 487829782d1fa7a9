"""After an episode: rewrite the rules (rule induction) and the playbook (summarisation) in full."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from pipeline_lib.agent.decide import Render
from pipeline_lib.agent.knowledge import Knowledge
from pipeline_lib.agent.options import AgentOptions
from pipeline_lib.agent.parsing import parse_reflection
from pipeline_lib.agent.prompts import reflection_messages
from pipeline_lib.agent.trajectory import Trajectory
from pipeline_lib.sampling.base import Sampler, SamplingParams, derive_seed


@dataclass(frozen=True)
class ReflectionRecord:
    raw: str  # the model's answer ("" when no call was made)
    parsed: bool  # every requested block was found; False keeps the old knowledge
    rules_changed: bool
    playbook_changed: bool
    skipped: str | None = None  # why no call was made

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReflectionRecord:
        return cls(**data)


def reflect(
    sampler: Sampler,
    render: Render,
    knowledge: Knowledge,
    trajectory: Trajectory,
    options: AgentOptions,
    seed: int,
) -> tuple[Knowledge, ReflectionRecord]:
    """New knowledge from the old and the episode; the documents the options switch off are neither shown nor asked for.

    Oracle rules are shown as given and never rewritten, so only the playbook is learnt then.
    """
    rewrite_rules = options.use_rules and not options.oracle_rules
    rewrite_playbook = options.use_playbook
    if not options.learn:
        return knowledge, ReflectionRecord("", False, False, False, skipped="learning is off")
    if not (rewrite_rules or rewrite_playbook):
        return knowledge, ReflectionRecord("", False, False, False, skipped="no document to rewrite")
    context = trajectory.context
    given_rules = context.rules if options.oracle_rules and context is not None else None
    messages = reflection_messages(
        context,
        trajectory,
        rules=knowledge.rules if rewrite_rules else None,
        playbook=knowledge.playbook if rewrite_playbook else None,
        given_rules=given_rules,
        budget=options.trajectory_char_budget,
    )
    params = SamplingParams(
        temperature=options.temperature,
        max_new_tokens=options.reflection_max_new_tokens,
        seed=derive_seed(options.seed, "reflect", seed),
    )
    raw = sampler.generate([render(messages)], params)[0].text
    parsed = parse_reflection(raw, rules=rewrite_rules, playbook=rewrite_playbook)
    if parsed is None:
        return knowledge, ReflectionRecord(raw, False, False, False)
    rules, playbook = parsed
    new = dataclasses.replace(
        knowledge,
        rules=rules if rewrite_rules else knowledge.rules,
        playbook=playbook if rewrite_playbook else knowledge.playbook,
    )
    return new, ReflectionRecord(raw, True, new.rules != knowledge.rules, new.playbook != knowledge.playbook)
