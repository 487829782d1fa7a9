"""What a CEL recipe means for the agent: which layouts each phase plays, with which options and knowledge.

Learning and held-out layouts come from disjoint seed ranges, and held-out
seeds whose generated level repeats a learning level (or another held-out
one) are skipped, so "held-out" means levels the agent never played.
"""

from __future__ import annotations

import dataclasses

from methods.cel.config import CelConfig
from pipeline_lib.agent import AgentOptions, Knowledge, ablation
from pipeline_lib.core.errors import UserError
from pipeline_lib.games import GridGame, make_env

# Seeds per recipe seed: room for any number of learning episodes below the
# held-out range, and for skipped repeats above it.
SEED_STRIDE = 1_000_000
HELD_OUT_OFFSET = 500_000
# Small boards have few distinct levels; give up rather than loop forever.
MAX_SKIPS = 10_000


def make_game(cel: CelConfig) -> GridGame:
    return make_env(cel.game, symbols=cel.symbols, max_steps=cel.max_steps, **cel.knobs)


def learning_seeds(cel: CelConfig, seed: int) -> list[int]:
    return [seed * SEED_STRIDE + i for i in range(cel.learn_episodes)]


def held_out_seeds(cel: CelConfig, seed: int) -> list[int]:
    game = make_game(cel)
    seen = set()
    for s in learning_seeds(cel, seed):
        game.reset(s)
        seen.add(game.layout_key())
    start = seed * SEED_STRIDE + HELD_OUT_OFFSET
    chosen: list[int] = []
    for candidate in range(start, start + cel.eval_episodes + MAX_SKIPS):
        game.reset(candidate)
        if game.layout_key() not in seen:
            seen.add(game.layout_key())
            chosen.append(candidate)
            if len(chosen) == cel.eval_episodes:
                return chosen
    raise UserError(
        f"cel: {cel.game} with knobs {cel.knobs} has too few distinct levels for "
        f"{cel.learn_episodes} learning and {cel.eval_episodes} held-out episodes; use a larger board"
    )


def agent_options(cel: CelConfig, seed: int, *, evaluation: bool) -> AgentOptions:
    """The recipe's ablation with its settings; held-out play never rewrites the knowledge."""
    options = ablation(cel.ablation)
    options = dataclasses.replace(
        options,
        mode=cel.mode or options.mode,
        temperature=cel.eval_temperature if evaluation else cel.temperature,
        max_new_tokens=cel.max_new_tokens,
        reflection_max_new_tokens=cel.reflection_max_new_tokens,
        history_steps=cel.history_steps,
        trajectory_char_budget=cel.trajectory_char_budget,
        answer_prefill=cel.answer_prefill,
        max_lookahead_actions=cel.max_lookahead_actions,
        seed=seed,
    )
    return dataclasses.replace(options, learn=False) if evaluation else options


def starting_knowledge(cel: CelConfig) -> Knowledge:
    return Knowledge(rules=cel.initial_rules, playbook=cel.initial_playbook)
