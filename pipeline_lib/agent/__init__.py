"""CEL ("Cogito, ergo ludo", METHODS.md §6): an LLM agent that learns grid games from scratch.

It keeps two plain-text documents, rules and playbook, plays with them in
context (value, next-state predictions, action in a fixed format) and rewrites
both after each episode. Backend-neutral: it takes any ``Sampler`` and a
function that renders chat messages into the sampler's prompt text.
"""

from pipeline_lib.agent.decide import Render, decide_lookahead, decide_single, lookahead_candidates
from pipeline_lib.agent.episode import play_episode, play_scripted
from pipeline_lib.agent.knowledge import Knowledge, PromptContext, prompt_context
from pipeline_lib.agent.metrics import episode_metrics, summarise, world_model_accuracy
from pipeline_lib.agent.options import ABLATIONS, AgentOptions, ablation
from pipeline_lib.agent.parsing import (
    VALUES,
    Decision,
    grids_match,
    normalise_action,
    parse_decision,
    parse_next_grid,
    parse_reflection,
    parse_value,
)
from pipeline_lib.agent.reflection import ReflectionRecord, reflect
from pipeline_lib.agent.sft import canonical_response, winning_step_rows
from pipeline_lib.agent.trajectory import (
    StepRecord,
    Trajectory,
    read_trajectories,
    trajectories_table,
    write_trajectories,
)

__all__ = [
    "ABLATIONS",
    "VALUES",
    "AgentOptions",
    "Decision",
    "Knowledge",
    "PromptContext",
    "ReflectionRecord",
    "Render",
    "StepRecord",
    "Trajectory",
    "ablation",
    "canonical_response",
    "decide_lookahead",
    "decide_single",
    "episode_metrics",
    "grids_match",
    "lookahead_candidates",
    "normalise_action",
    "parse_decision",
    "parse_next_grid",
    "parse_reflection",
    "parse_value",
    "play_episode",
    "play_scripted",
    "prompt_context",
    "read_trajectories",
    "reflect",
    "winning_step_rows",
    "summarise",
    "trajectories_table",
    "world_model_accuracy",
]
