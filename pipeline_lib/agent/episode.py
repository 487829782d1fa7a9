"""Playing one episode: the model-driven agent and a scripted one that proves the harness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline_lib.agent.decide import Choice, Render, decide_lookahead, decide_single
from pipeline_lib.agent.knowledge import Knowledge, PromptContext, prompt_context
from pipeline_lib.agent.options import AgentOptions
from pipeline_lib.agent.parsing import Decision, grids_match, normalise_action
from pipeline_lib.agent.trajectory import StepRecord, Trajectory
from pipeline_lib.sampling.base import Sampler, derive_seed


def play_episode(
    sampler: Sampler,
    render: Render,
    env: Any,
    knowledge: Knowledge,
    options: AgentOptions,
    seed: int,
    episode_index: int,
) -> Trajectory:
    """Play ``env`` from ``reset(seed)`` until it ends; every step, valid or not, is recorded."""
    context = prompt_context(env, knowledge, options)

    def choose(observation: str, legal: list[str], steps: list[StepRecord]) -> Choice:
        step_seed = derive_seed(options.seed, episode_index, len(steps) + 1)
        if options.mode == "lookahead":
            return decide_lookahead(sampler, render, context, observation, legal, options, step_seed)
        return decide_single(sampler, render, context, observation, legal, steps, options, step_seed)

    return _play(env, seed, episode_index, options.mode, context, choose)


def play_scripted(
    env: Any, seed: int, policy: Callable[[Any], str] | None = None, episode_index: int = 0
) -> Trajectory:
    """Play with a policy instead of a model (default: the game's solver); same records, no responses.

    Its prompt context is the default agent's with empty knowledge, so its
    successful episodes also make SFT rows.
    """
    if policy is None:
        from pipeline_lib.games import solver_action

        policy = solver_action
    context = prompt_context(env, Knowledge(), AgentOptions())

    def choose(observation: str, legal: list[str], steps: list[StepRecord]) -> Choice:
        action = normalise_action(policy(env))
        return Choice(Decision(None, {}, action, None, action), [])

    return _play(env, seed, episode_index, "scripted", context, choose)


def _play(
    env: Any,
    seed: int,
    episode_index: int,
    player: str,
    context: PromptContext,
    choose: Callable[[str, list[str], list[StepRecord]], Choice],
) -> Trajectory:
    observation = env.reset(seed)
    layout_key = env.layout_key()  # the level as dealt, before play changes the board
    steps: list[StepRecord] = []
    while not env.done:
        if len(steps) >= env.max_steps:
            raise RuntimeError(f"{env.name} did not end within its budget of {env.max_steps} steps")
        legal = list(env.legal_actions())
        choice = choose(observation, legal, steps)
        decision = choice.decision
        # An invalid answer still reaches the game, which answers with its no-op feedback and counts the step.
        result = env.step(decision.action if decision.action is not None else decision.raw_action)
        valid = decision.action is not None and bool(result.valid)
        predicted = decision.predictions.get(decision.action) if valid else None
        error = decision.error if decision.action is None else (None if valid else "the game rejected it")
        steps.append(
            StepRecord(
                step=len(steps) + 1,
                observation=observation,
                legal_actions=legal,
                responses=choice.responses,
                value=decision.value,
                predictions=dict(decision.predictions),
                action=decision.action if valid else None,
                raw_action=decision.raw_action,
                valid=valid,
                error=error,
                feedback=result.feedback,
                reward=float(result.reward),
                next_observation=result.observation,
                world_model_match=None if predicted is None else grids_match(predicted, result.observation),
            )
        )
        observation = result.observation
    return Trajectory(
        game=env.name,
        seed=seed,
        episode_index=episode_index,
        layout_key=layout_key,
        max_steps=env.max_steps,
        player=player,
        context=context,
        steps=steps,
        success=bool(env.success),
        reward=sum(s.reward for s in steps),
    )
