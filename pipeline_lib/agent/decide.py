"""Choosing an action with the model: one call (single mode) or a search over predicted states (lookahead mode)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline_lib.agent.knowledge import PromptContext
from pipeline_lib.agent.options import AgentOptions
from pipeline_lib.agent.parsing import (
    NO_ACTION_LINE,
    Decision,
    parse_decision,
    parse_next_grid,
    parse_value,
    value_rank,
)
from pipeline_lib.agent.prompts import decision_messages, value_messages, world_model_messages
from pipeline_lib.agent.trajectory import StepRecord
from pipeline_lib.sampling.base import Sampler, SamplingParams, derive_seed

# Rendered chat messages, ending with the assistant's turn header; built by the caller from its
# tokenizer, so the agent works with any backend.
Render = Callable[[list[dict[str, str]]], str]

PREFILL_TOKENS = 8  # room for the longest action ("reveal 12 13") or a value word
VALUE_TOKENS = 32  # without prefill the model may say a few words before its VALUE line


@dataclass(frozen=True)
class Choice:
    decision: Decision
    responses: list[str]  # every call's answer, prefilled labels included


def decide_single(
    sampler: Sampler,
    render: Render,
    context: PromptContext,
    observation: str,
    legal_actions: Sequence[str],
    previous: Sequence[StepRecord],
    options: AgentOptions,
    seed: int,
) -> Choice:
    """One call for value, predictions and action; a short second call after "ACTION:" when it gave none.

    With prefill the first call stops at "ACTION:", so a small model's rambling
    costs no tokens and the action comes from a call that can only name one.
    """
    prompt = render(decision_messages(context, observation, legal_actions, previous))
    stop = ("ACTION:",) if options.answer_prefill else ()
    params = SamplingParams(
        temperature=options.temperature, max_new_tokens=options.max_new_tokens, seed=seed, stop=stop
    )
    response = sampler.generate([prompt], params)[0].text
    decision = parse_decision(response, legal_actions)
    if decision.error != NO_ACTION_LINE or not options.answer_prefill:
        return Choice(decision, [response])
    so_far = response if not response or response.endswith("\n") else response + "\n"
    short = SamplingParams(
        temperature=options.temperature, max_new_tokens=PREFILL_TOKENS, seed=derive_seed(seed, "prefill"), stop=("\n",)
    )
    answer = "ACTION:" + sampler.generate([prompt + so_far + "ACTION:"], short)[0].text
    return Choice(parse_decision(so_far + answer, legal_actions), [response, answer])


def lookahead_candidates(legal_actions: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most ``limit`` legal actions, a seeded sample kept in the game's order when there are more."""
    if len(legal_actions) <= limit:
        return list(legal_actions)
    chosen = set(random.Random(seed).sample(range(len(legal_actions)), limit))
    return [a for i, a in enumerate(legal_actions) if i in chosen]


def decide_lookahead(
    sampler: Sampler,
    render: Render,
    context: PromptContext,
    observation: str,
    legal_actions: Sequence[str],
    options: AgentOptions,
    seed: int,
) -> Choice:
    """Predict each candidate's next grid (one batched call), value each prediction (another), take the best.

    A candidate without a parsable prediction is valued Low; ties go to the
    earlier candidate.
    """
    candidates = lookahead_candidates(legal_actions, options.max_lookahead_actions, derive_seed(seed, "candidates"))
    if not candidates:
        return Choice(Decision(None, {}, None, "no legal actions"), [])
    prefill = options.answer_prefill
    world_head = "NEXT:\n" if prefill else ""
    world_params = SamplingParams(
        temperature=options.temperature,
        max_new_tokens=options.max_new_tokens,
        seed=derive_seed(seed, "world"),
        stop=("\n\n",) if prefill else (),  # with the label given, a blank line ends the grid
    )
    world_prompts = [render(world_model_messages(context, observation, a)) + world_head for a in candidates]
    world = [world_head + s.text for s in sampler.generate(world_prompts, world_params)]
    predictions = {a: grid for a, text in zip(candidates, world, strict=True) if (grid := parse_next_grid(text))}

    value_head = "VALUE:" if prefill else ""
    value_params = SamplingParams(
        temperature=options.temperature,
        max_new_tokens=PREFILL_TOKENS if prefill else VALUE_TOKENS,
        seed=derive_seed(seed, "value"),
        stop=("\n",) if prefill else (),
    )
    predicted = list(predictions)
    value_prompts = [render(value_messages(context, predictions[a])) + value_head for a in predicted]
    valued = [value_head + s.text for s in sampler.generate(value_prompts, value_params)] if value_prompts else []
    values = {a: parse_value(text) for a, text in zip(predicted, valued, strict=True)}

    best = max(candidates, key=lambda a: (value_rank(values.get(a)), -candidates.index(a)))
    decision = Decision(values.get(best) or "Low", predictions, best, None, best)
    return Choice(decision, world + valued)
