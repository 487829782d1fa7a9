"""The agent's prompts, as chat messages; short, because a 135M model with a small context reads them.

The game's name never appears: with abstract symbols the agent must learn the
game from play, not recall it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_lib.agent.knowledge import PromptContext
from pipeline_lib.agent.parsing import MAX_PREDICTIONS
from pipeline_lib.agent.trajectory import StepRecord, Trajectory

Messages = list[dict[str, str]]

START_FEEDBACK = "(game started)"
EMPTY = "(empty)"
# More legal actions than this are summarised: the action help already says their shape.
MAX_LISTED_ACTIONS = 64

_PLAYER = (
    "You play a grid game, one action per turn. You do not know the game in advance: "
    "learn it from your rules and playbook and from what happens."
)
_DECISION_FORMAT = (
    "VALUE: High|Medium|Low\nPREDICT <action>:\n<the grid after that action, same format>\nACTION: <one legal action>"
)
_DECISION_FORMAT_NO_LOOKAHEAD = "VALUE: High|Medium|Low\nACTION: <one legal action>"


def _section(title: str, text: str | None) -> str:
    return "" if text is None else f"{title}:\n{text.strip() or EMPTY}\n\n"


def _legal(actions: Sequence[str]) -> str:
    listed = ", ".join(actions[:MAX_LISTED_ACTIONS])
    more = len(actions) - MAX_LISTED_ACTIONS
    return listed + (f", ... ({more} more)" if more > 0 else "")


def _did(step: StepRecord) -> str:
    """The action taken, or the invalid answer (the game's feedback says why it was refused)."""
    if step.action is not None:
        return step.action
    return f"invalid {step.raw_action!r}" if step.raw_action else f"invalid ({step.error})"


def _history(steps: Sequence[StepRecord]) -> str:
    if not steps:
        return "(none)"
    return "\n".join(f"{s.step}. {_did(s)} -> {s.feedback}" for s in steps)


def decision_messages(
    context: PromptContext, observation: str, legal_actions: Sequence[str], previous: Sequence[StepRecord]
) -> Messages:
    """The single-call prompt: knowledge, recent steps, the grid, and the answer format."""
    recent = list(previous)[-context.history_steps :] if context.history_steps else []
    last_feedback = previous[-1].feedback if previous else START_FEEDBACK
    if context.predict_next:
        answer = f"{_DECISION_FORMAT}\nGive at most {MAX_PREDICTIONS} PREDICT blocks, for your best candidate actions."
    else:
        answer = _DECISION_FORMAT_NO_LOOKAHEAD
    user = (
        f"{context.action_help.strip()}\nLegal now: {_legal(legal_actions)}\n\n"
        f"{_section('Rules', context.rules)}{_section('Playbook', context.playbook)}"
        f"Recent steps:\n{_history(recent)}\n\nGrid:\n{observation}\nLast feedback: {last_feedback}\n\n"
        f"Answer in exactly this format:\n{answer}"
    )
    return [{"role": "system", "content": _PLAYER}, {"role": "user", "content": user}]


def world_model_messages(context: PromptContext, observation: str, action: str) -> Messages:
    user = (
        f"{context.action_help.strip()}\n\n{_section('Rules', context.rules)}"
        f"Grid:\n{observation}\nAction: {action}\n\n"
        "Predict the grid after this action. Answer with NEXT: and then the grid lines, in the same format."
    )
    return [{"role": "system", "content": "You predict how a grid game changes."}, {"role": "user", "content": user}]


def value_messages(context: PromptContext, grid: str) -> Messages:
    user = (
        f"{_section('Rules', context.rules)}{_section('Playbook', context.playbook)}Grid:\n{grid}\n\n"
        "How likely is a win from this grid? Answer with VALUE: High, Medium or Low."
    )
    return [{"role": "system", "content": _PLAYER}, {"role": "user", "content": user}]


def _step_block(s: StepRecord) -> str:
    after = "(grid unchanged)" if s.next_observation == s.observation else s.next_observation
    return f"Step {s.step}: {_did(s)} -> {s.feedback} (reward {s.reward:g})\n{after}\n"


def trajectory_text(trajectory: Trajectory, budget: int) -> str:
    """The episode as text of at most ``budget`` characters; middle steps go first, and the text says so."""
    steps = trajectory.steps
    head = f"Start grid:\n{steps[0].observation}\n" if steps else "No steps were played.\n"
    outcome = "won" if trajectory.success else "not won"
    budget_note = f"budget {trajectory.max_steps}"
    tail = f"Result: {outcome} after {len(steps)} steps ({budget_note}), total reward {trajectory.reward:g}."
    blocks = [_step_block(s) for s in steps]
    room = budget - len(head) - len(tail)
    if sum(map(len, blocks)) <= room:
        text = head + "".join(blocks) + tail
    else:
        # Keep the opening and the ending (where the outcome was decided), alternately, while they fit.
        room -= len(f"... steps {len(steps)} to {len(steps)} left out ...\n")
        first, last, used = 0, len(blocks), 0
        take_from_end = True
        while first < last:
            index = last - 1 if take_from_end else first
            if used + len(blocks[index]) > room:
                break
            used += len(blocks[index])
            last, first = (last - 1, first) if take_from_end else (last, first + 1)
            take_from_end = not take_from_end
        gap = f"... steps {first + 1} to {last} left out ...\n"
        text = head + "".join(blocks[:first]) + gap + "".join(blocks[last:]) + tail
    if len(text) > budget:  # even the opening grid and the result do not fit
        marker = "\n[cut]"
        text = text[: max(0, budget - len(marker))] + marker
    return text


def reflection_messages(
    context: PromptContext | None,
    trajectory: Trajectory,
    rules: str | None,
    playbook: str | None,
    given_rules: str | None,
    budget: int,
) -> Messages:
    """Ask for a full rewrite of the documents not None among ``rules`` and ``playbook``.

    ``given_rules`` (the oracle's) are shown as fixed context and never rewritten.
    """
    wanted = [name for name, text in (("RULES", rules), ("PLAYBOOK", playbook)) if text is not None]
    explain = {
        "RULES": "RULES: what each symbol means, what each action does, what gives reward, how to win or lose.",
        "PLAYBOOK": "PLAYBOOK: a short, concrete strategy for winning.",
    }
    actions = f"{context.action_help.strip()}\n\n" if context is not None else ""
    given = _section("Rules (given, correct)", given_rules)
    current = _section("Your current rules", rules) + _section("Your current playbook", playbook)
    answer = "\n".join(f"{name}:\n...\nEND {name}" for name in wanted)
    user = (
        f"{actions}{given}{current}Last episode:\n{trajectory_text(trajectory, budget)}\n\n"
        f"Rewrite your notes in full from all of the above (replace them, do not append).\n"
        + "\n".join(explain[name] for name in wanted)
        + f"\nAnswer in exactly this format:\n{answer}"
    )
    system = "You learn a grid game from your own play by keeping notes."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
