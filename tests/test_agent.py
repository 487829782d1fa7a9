"""The CEL agent: strict parsing, both decision modes, reflection, metrics and files, against the real games.

Most tests drive the agent with ``ScriptedSampler``, a stand-in for the model
that returns canned texts, so each mechanism is checked on known answers; one
group runs the tiny random Llama through ``HFSampler`` to prove the loop works
with real generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline_lib.agent import (
    ABLATIONS,
    AgentOptions,
    Knowledge,
    ReflectionRecord,
    Trajectory,
    ablation,
    episode_metrics,
    parse_decision,
    parse_reflection,
    play_episode,
    play_scripted,
    read_trajectories,
    reflect,
    winning_step_rows,
    summarise,
    trajectories_table,
    write_trajectories,
)
from pipeline_lib.agent.prompts import trajectory_text
from pipeline_lib.core.errors import UserError
from pipeline_lib.games import GAMES, make_env, solver_action
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams

MOVES = ["left", "down", "right", "up"]
RAMBLE = "Well, the grid is interesting and I think that the best thing to do is to consider every option"


class ScriptedSampler(Sampler):
    """A test double for the model: answers each prompt with ``answer(prompt, params)`` and records the calls."""

    name = "scripted"
    model_id = "scripted"

    def __init__(self, answer: Callable[[str, SamplingParams], str]) -> None:
        self.answer = answer
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]:
        self.calls.append((list(prompts), params))
        return [Sample(i, 0, self.answer(p, params), 1, 1, "stop") for i, p in enumerate(prompts)]

    def close(self) -> None:
        pass


def canned(*texts: str) -> ScriptedSampler:
    """Answers in order, one per prompt."""
    queue = list(texts)
    return ScriptedSampler(lambda prompt, params: queue.pop(0))


def render(messages: list[dict[str, str]]) -> str:
    return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"


def frozen_lake(max_steps: int | None = None):
    return make_env("frozen_lake", max_steps=max_steps)


# -- parsing ----------------------------------------------------------------


def test_parse_decision_reads_value_predictions_and_action() -> None:
    text = "VALUE: high\nPREDICT left:\nP F\nF G\n\nPREDICT Down:\nS F\nP G\nACTION: Left"
    decision = parse_decision(text, MOVES)
    assert decision.value == "High"
    assert decision.predictions == {"left": "P F\nF G", "down": "S F\nP G"}
    assert (decision.action, decision.error) == ("left", None)


def test_parse_decision_normalises_case_quotes_punctuation_and_spaces() -> None:
    legal = ["reveal 2 3", "reveal 0 0"]
    assert parse_decision("action:   'Reveal  2 3'.", legal).action == "reveal 2 3"
    assert parse_decision('ACTION: "REVEAL 0 0"!', legal).action == "reveal 0 0"
    # The games read brackets and commas as spaces; what a game accepts, the parser accepts.
    assert parse_decision("ACTION: reveal(2, 3)", legal).action == "reveal 2 3"


def test_parse_decision_rejects_what_is_not_exactly_legal() -> None:
    missing = parse_decision("VALUE: Low\nI would go left.", MOVES)
    assert (missing.action, missing.error, missing.value) == (None, "no ACTION line", "Low")
    illegal = parse_decision("ACTION: jump", MOVES)
    assert illegal.action is None and "not a legal action 'jump'" in illegal.error
    assert parse_decision("ACTION: move left", MOVES).action is None
    assert parse_decision("ACTION: left right", MOVES).action is None
    assert parse_decision("ACTION:", MOVES).error == "empty ACTION line"
    assert parse_decision("VALUE: Great\nACTION: up", MOVES).value is None


def test_parse_decision_last_action_line_wins() -> None:
    assert parse_decision("ACTION: up\nOn second thought...\nACTION: left", MOVES).action == "left"
    assert parse_decision("ACTION: left\nACTION: fly", MOVES).action is None


def test_parser_accepts_everything_the_games_accept() -> None:
    """So an answer recorded as invalid never moves the game."""
    env = frozen_lake()
    for raw in ["Left", "'left'", "left.", "(left)", ":left", "left?", "LEFT ,", "move left", "lefty", "go"]:
        env.reset(0)
        result = env.step(raw)
        if result.valid:
            assert parse_decision(f"ACTION: {raw}", MOVES).action == "left", raw


def test_parse_reflection_needs_both_blocks_closed_and_non_empty() -> None:
    good = "Thinking...\nRULES:\nH is a hole.\nEND RULES\nPLAYBOOK:\nAvoid H.\nEND PLAYBOOK\n"
    assert parse_reflection(good) == ("H is a hole.", "Avoid H.")
    assert parse_reflection("RULES:\nH is a hole.\nEND RULES\nPLAYBOOK:\nAvoid H.") is None
    assert parse_reflection("RULES:\nEND RULES\nPLAYBOOK:\nAvoid H.\nEND PLAYBOOK") is None
    assert parse_reflection("RULES:\n...\nEND RULES\nPLAYBOOK:\nAvoid H.\nEND PLAYBOOK") is None
    assert parse_reflection("garbage") is None
    assert parse_reflection("PLAYBOOK:\nAvoid H.\nEND PLAYBOOK", rules=False) == ("", "Avoid H.")


# -- single-call decisions ----------------------------------------------------


def test_answer_prefill_asks_for_the_action_after_a_rambling_answer() -> None:
    sampler = canned(RAMBLE, " left")
    env = frozen_lake(max_steps=1)
    options = AgentOptions(answer_prefill=True, learn=False)
    trajectory = play_episode(sampler, render, env, Knowledge(), options, seed=0, episode_index=0)

    (first_prompts, first_params), (prefill_prompts, prefill_params) = sampler.calls
    assert first_params.stop == ("ACTION:",) and first_params.max_new_tokens == options.max_new_tokens
    assert prefill_prompts == [first_prompts[0] + RAMBLE + "\nACTION:"]
    assert (prefill_params.max_new_tokens, prefill_params.stop) == (8, ("\n",))
    (step,) = trajectory.steps
    assert step.responses == [RAMBLE, "ACTION: left"]
    assert (step.action, step.valid, step.error) == ("left", True, None)
    assert env.steps == 1


def test_without_prefill_a_missing_action_is_an_invalid_counted_no_op() -> None:
    sampler = canned(RAMBLE)
    env = frozen_lake(max_steps=1)
    trajectory = play_episode(sampler, render, env, Knowledge(), AgentOptions(answer_prefill=False), 0, 0)
    assert len(sampler.calls) == 1 and sampler.calls[0][1].stop == ()
    (step,) = trajectory.steps
    assert (step.action, step.valid, step.error, step.raw_action) == (None, False, "no ACTION line", "")
    assert step.next_observation == step.observation
    assert "not a legal action" in step.feedback and "Nothing happened" in step.feedback
    assert env.steps == 1 and env.done and not trajectory.success


@pytest.mark.parametrize("game", GAMES)
def test_invalid_actions_are_no_ops_that_spend_the_step_budget(game: str) -> None:
    sampler = ScriptedSampler(lambda prompt, params: "VALUE: Low\nACTION: fly away")
    env = make_env(game, max_steps=3)
    trajectory = play_episode(sampler, render, env, Knowledge(), AgentOptions(), seed=5, episode_index=0)
    start = env.reset(5)
    assert [s.step for s in trajectory.steps] == [1, 2, 3]
    assert all(s.observation == start for s in trajectory.steps)
    # The last grid may differ: Minesweeper shows its mines once the game is over.
    assert all(s.next_observation == start for s in trajectory.steps[:-1])
    assert all(not s.valid and s.raw_action == "fly away" and "fly away" in s.feedback for s in trajectory.steps)
    assert "step budget" in trajectory.steps[-1].feedback
    assert episode_metrics(trajectory)["invalid_rate"] == 1.0 and not trajectory.success


def test_prompt_shows_knowledge_as_the_options_say() -> None:
    env = frozen_lake(max_steps=1)
    knowledge = Knowledge(rules="RULE-TEXT", playbook="PLAYBOOK-TEXT")

    def first_prompt(options: AgentOptions, knowledge: Knowledge = knowledge) -> str:
        sampler = ScriptedSampler(lambda prompt, params: "ACTION: left")
        play_episode(sampler, render, env, knowledge, options, 0, 0)
        return sampler.calls[0][0][0]

    full = first_prompt(AgentOptions())
    assert "RULE-TEXT" in full and "PLAYBOOK-TEXT" in full and "PREDICT <action>" in full
    assert "frozen" not in full.lower()  # the game's name would let the model lean on priors
    assert "Legal now: left, down, right, up" in full
    zero = first_prompt(ablation("zero_shot"))
    assert "RULE-TEXT" not in zero and "PLAYBOOK-TEXT" not in zero and "Rules:" not in zero
    oracle = first_prompt(ablation("oracle_rules"))
    assert "RULE-TEXT" not in oracle and env.oracle_rules() in oracle
    assert "PREDICT" not in first_prompt(ablation("no_lookahead"))
    empty = first_prompt(AgentOptions(), Knowledge())
    assert "Rules:\n(empty)" in empty and "Playbook:\n(empty)" in empty


# -- lookahead mode ------------------------------------------------------------


def _action_in(prompt: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in prompt.splitlines() if line.startswith("Action: "))


def test_lookahead_predicts_every_legal_action_then_takes_the_best_value() -> None:
    values = {"left": "Low", "down": "High", "right": "Medium", "up": "High"}

    def answer(prompt: str, params: SamplingParams) -> str:
        if prompt.endswith("NEXT:\n"):  # world model: the grid is tagged with the action it followed
            return f"X {_action_in(prompt)}\nX X\n\nchatter"
        assert prompt.endswith("VALUE:")
        action = next(a for a in MOVES if f"X {a}\n" in prompt)
        return f" {values[action]}"

    sampler = ScriptedSampler(answer)
    env = frozen_lake(max_steps=1)
    trajectory = play_episode(sampler, render, env, Knowledge(), ablation("search"), 0, 0)
    (world_prompts, world_params), (value_prompts, _) = sampler.calls
    assert len(world_prompts) == len(value_prompts) == 4 and world_params.stop == ("\n\n",)
    assert sorted(_action_in(p) for p in world_prompts) == sorted(MOVES)
    (step,) = trajectory.steps
    assert (step.action, step.value) == ("down", "High")  # down and up tie at High: the first wins
    assert step.predictions["up"] == "X up\nX X"
    assert step.world_model_match is False


def test_lookahead_without_a_parsable_prediction_values_it_low() -> None:
    def answer(prompt: str, params: SamplingParams) -> str:
        if "Predict the grid" in prompt:
            return "NEXT:\nA B" if _action_in(prompt) == "right" else "I cannot tell."
        return "VALUE: Medium"

    sampler = ScriptedSampler(answer)
    options = dataclasses.replace(ablation("search"), answer_prefill=False)
    trajectory = play_episode(sampler, render, frozen_lake(max_steps=1), Knowledge(), options, 0, 0)
    assert len(sampler.calls[1][0]) == 1  # only the parsed prediction is valued
    (step,) = trajectory.steps
    assert (step.action, step.value, step.predictions) == ("right", "Medium", {"right": "A B"})


def test_lookahead_limits_candidates_deterministically() -> None:
    options = dataclasses.replace(ablation("search"), max_lookahead_actions=3)

    def candidates() -> list[str]:
        sampler = ScriptedSampler(lambda prompt, params: "" if prompt.endswith("NEXT:\n") else " Low")
        play_episode(sampler, render, make_env("minesweeper", max_steps=1), Knowledge(), options, 4, 0)
        return [_action_in(p) for p in sampler.calls[0][0]]

    first = candidates()
    assert len(first) == 3 and first == candidates()


# -- world-model accuracy -------------------------------------------------------


def _solver_with_predictions(game: str, seed: int, wrong: bool) -> ScriptedSampler:
    """Answers as the solver would, predicting the true next grid (read off a twin game) or a wrong one."""
    twin = make_env(game)
    twin.reset(seed)

    def answer(prompt: str, params: SamplingParams) -> str:
        action = solver_action(twin)
        grid = "X X" if wrong else twin.step(action).observation
        if wrong:
            twin.step(action)
        return f"VALUE: High\nPREDICT {action}:\n{grid}\nACTION: {action}"

    return ScriptedSampler(answer)


@pytest.mark.parametrize("game", GAMES)
def test_world_model_accuracy_compares_predicted_and_actual_grids(game: str) -> None:
    def play(wrong: bool, index: int) -> Trajectory:
        sampler = _solver_with_predictions(game, 3, wrong=wrong)
        return play_episode(sampler, render, make_env(game), Knowledge(), AgentOptions(), 3, index)

    right = play(wrong=False, index=0)
    assert right.success and episode_metrics(right)["world_model_accuracy"] == 1.0
    wrong = play(wrong=True, index=1)
    assert wrong.success and episode_metrics(wrong)["world_model_accuracy"] == 0.0
    assert summarise([right, wrong])["world_model_accuracy"] == 0.5


def test_a_prediction_for_another_action_is_not_judged() -> None:
    sampler = ScriptedSampler(lambda prompt, params: "PREDICT up:\nS F\nACTION: left")
    trajectory = play_episode(sampler, render, frozen_lake(max_steps=2), Knowledge(), AgentOptions(), 0, 0)
    assert all(s.world_model_match is None for s in trajectory.steps)
    assert episode_metrics(trajectory)["world_model_accuracy"] is None


# -- reflection -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lost_episode() -> Trajectory:
    sampler = canned("ACTION: up", "ACTION: down")
    return play_episode(sampler, render, frozen_lake(max_steps=2), Knowledge(), AgentOptions(), 0, 0)


def test_reflection_rewrites_both_documents(lost_episode: Trajectory) -> None:
    old = Knowledge(rules="old rules", playbook="old playbook")
    sampler = canned("RULES:\nP moves.\nEND RULES\nPLAYBOOK:\nGo down.\nEND PLAYBOOK")
    new, record = reflect(sampler, render, old, lost_episode, AgentOptions(), seed=0)
    assert new == Knowledge(rules="P moves.", playbook="Go down.")
    assert record == ReflectionRecord(record.raw, True, True, True)
    (prompt,), params = sampler.calls[0]
    assert "old rules" in prompt and "old playbook" in prompt and "do not append" in prompt
    assert "END RULES" in prompt and "END PLAYBOOK" in prompt and "Step 2: down" in prompt
    assert params.max_new_tokens == AgentOptions().reflection_max_new_tokens


def test_reflection_keeps_the_old_knowledge_when_unparsable(lost_episode: Trajectory) -> None:
    old = Knowledge(rules="old rules", playbook="old playbook")
    new, record = reflect(canned("RULES: whatever, no end marker"), render, old, lost_episode, AgentOptions(), 0)
    assert new == old and not record.parsed and not record.rules_changed and not record.playbook_changed
    assert ReflectionRecord.from_dict(record.to_dict()) == record


def test_reflection_rewrites_only_what_the_options_learn(lost_episode: Trajectory) -> None:
    old = Knowledge(rules="old rules", playbook="old playbook")
    answer = "RULES:\nnew rules\nEND RULES\nPLAYBOOK:\nnew playbook\nEND PLAYBOOK"
    sampler = canned(answer)
    new, _ = reflect(sampler, render, old, lost_episode, ablation("no_rules"), 0)
    assert new == Knowledge(rules="old rules", playbook="new playbook")
    assert "END RULES" not in sampler.calls[0][0][0] and "old rules" not in sampler.calls[0][0][0]

    oracle = ablation("oracle_rules")
    oracle_run = play_episode(canned("ACTION: up"), render, frozen_lake(max_steps=1), old, oracle, 0, 0)
    sampler = canned(answer)
    new, record = reflect(sampler, render, old, oracle_run, oracle, 0)
    assert new == Knowledge(rules="old rules", playbook="new playbook") and not record.rules_changed
    prompt = sampler.calls[0][0][0]
    assert "Rules (given, correct)" in prompt and "END RULES" not in prompt

    sampler = canned(answer)
    for name in ("frozen", "zero_shot"):
        same, record = reflect(sampler, render, old, lost_episode, ablation(name), 0)
        assert same == old and record.skipped and not sampler.calls


def test_trajectory_text_elides_middle_steps_under_the_budget() -> None:
    sampler = ScriptedSampler(lambda prompt, params: "ACTION: right")
    long_run = play_episode(sampler, render, make_env("sokoban", max_steps=40), Knowledge(), AgentOptions(), 0, 0)
    full = trajectory_text(long_run, 100_000)
    assert "left out" not in full and "Step 40:" in full
    short = trajectory_text(long_run, 1500)
    assert len(short) <= 1500 and "left out ..." in short
    assert "Step 1:" in short and "Step 40:" in short and "Result: not won after 40 steps" in short
    assert len(trajectory_text(long_run, 50)) <= 50


# -- scripted agent, metrics, files, SFT rows ------------------------------------------------


@pytest.mark.parametrize("game", GAMES)
def test_the_scripted_solver_wins_every_level(game: str) -> None:
    trajectories = [play_scripted(make_env(game), seed, episode_index=seed) for seed in range(50)]
    summary = summarise(trajectories)
    assert summary["success_rate"] == 1.0 and summary["invalid_rate"] == 0.0 and summary["episodes"] == 50
    assert summary["mean_steps_to_success"] == summary["mean_steps"]
    assert all(t.reward == 1.0 and t.player == "scripted" for t in trajectories)


def test_metrics_of_won_and_lost_episodes(lost_episode: Trajectory) -> None:
    won = play_scripted(frozen_lake(), 0)
    assert episode_metrics(won) == {
        "success": 1, "steps": len(won.steps), "steps_to_success": len(won.steps),
        "invalid_rate": 0.0, "world_model_accuracy": None, "reward": 1.0,
    }
    lost = episode_metrics(lost_episode)
    assert (lost["success"], lost["steps_to_success"], lost["steps"]) == (0, None, 2)
    summary = summarise([won, lost_episode])
    assert summary["success_rate"] == 0.5 and summary["mean_steps_to_success"] == len(won.steps)
    assert summary["mean_steps"] == (len(won.steps) + 2) / 2


def test_trajectories_round_trip_and_flatten(tmp_path: Path, lost_episode: Trajectory) -> None:
    trajectories = [play_scripted(make_env("minesweeper"), 1), lost_episode]
    path = tmp_path / "t" / "trajectories.jsonl"
    write_trajectories(path, trajectories)
    assert read_trajectories(path) == trajectories
    assert [p.name for p in path.parent.iterdir()] == ["trajectories.jsonl"]  # no temporary file left behind
    rows = trajectories_table(trajectories)
    assert len(rows) == sum(len(t.steps) for t in trajectories)
    assert set(rows[0]) >= {"episode", "step", "action", "valid", "feedback", "reward", "value", "world_model_match"}


def test_sft_rows_come_from_valid_steps_of_won_episodes(lost_episode: Trajectory) -> None:
    sampler = _solver_with_predictions("frozen_lake", 2, wrong=False)
    won = play_episode(sampler, render, frozen_lake(), Knowledge(), AgentOptions(), 2, 0)
    rows = winning_step_rows([won, lost_episode])
    assert len(rows) == len(won.steps)
    first = rows[0]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    # Each prompt, rebuilt from the trajectory, is the very prompt the agent was given at that step.
    assert [render(row["prompt"]) for row in rows] == [prompts[0] for prompts, _ in sampler.calls]
    step = won.steps[0]
    expected = f"VALUE: High\nPREDICT {step.action}:\n{step.next_observation}\nACTION: {step.action}"
    assert first["completion"] == expected
    assert parse_decision(first["completion"], step.legal_actions).action == step.action
    no_lookahead = dataclasses.replace(won, context=dataclasses.replace(won.context, predict_next=False))
    assert winning_step_rows([no_lookahead])[0]["completion"] == f"VALUE: High\nACTION: {step.action}"


# -- options ---------------------------------------------------------------------------


def test_ablation_presets() -> None:
    assert ablation("full") == AgentOptions()
    assert ablation("frozen").learn is False
    zero = ablation("zero_shot")
    assert (zero.learn, zero.use_rules, zero.use_playbook) == (False, False, False)
    assert ablation("no_rules").use_rules is False and ablation("no_playbook").use_playbook is False
    assert ablation("no_lookahead").predict_next is False and ablation("no_lookahead").mode == "single"
    assert ablation("oracle_rules").oracle_rules is True
    assert ablation("search").mode == "lookahead"
    assert ablation("frozen", AgentOptions(seed=7)).seed == 7
    names = {"full", "frozen", "zero_shot", "no_rules", "no_playbook", "no_lookahead", "oracle_rules", "search"}
    assert set(ABLATIONS) == names
    with pytest.raises(UserError, match="'greedy'.*full, frozen"):
        ablation("greedy")
    with pytest.raises(UserError, match="mode"):
        AgentOptions(mode="tree")


def test_knowledge_round_trips() -> None:
    knowledge = Knowledge(rules="a", playbook="b")
    assert Knowledge.from_dict(knowledge.to_dict()) == knowledge


# -- the tiny random model through HFSampler ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_sampler():
    from pipeline_lib.models import resolve_model
    from pipeline_lib.sampling.hf import HFSampler

    with HFSampler(resolve_model("tiny-llama"), batch_size=8, progress=False) as sampler:
        yield sampler


@pytest.mark.parametrize(
    ("game", "mode"), [("frozen_lake", "single"), ("minesweeper", "single"), ("sokoban", "lookahead")]
)
def test_tiny_model_plays_learns_and_saves(tiny_sampler, tmp_path: Path, game: str, mode: str) -> None:
    from pipeline_lib.sampling import render_chat
    from pipeline_lib.training.sft_data import tokenize_sft_rows

    def chat(messages: list[dict[str, str]]) -> str:
        return render_chat(tiny_sampler.tokenizer, messages)

    options = AgentOptions(
        mode=mode, max_new_tokens=24, reflection_max_new_tokens=24, max_lookahead_actions=2, seed=1
    )
    env = make_env(game, max_steps=2)
    old = Knowledge(rules="old rules", playbook="old playbook")
    trajectory = play_episode(tiny_sampler, chat, env, old, options, seed=11, episode_index=0)
    assert env.done and 1 <= len(trajectory.steps) <= 2
    assert [s.step for s in trajectory.steps] == list(range(1, len(trajectory.steps) + 1))
    assert all(s.responses for s in trajectory.steps)
    for s in trajectory.steps[:-1]:  # the last grid may show Minesweeper's mines, the game being over
        if not s.valid:
            assert s.action is None and s.error and s.next_observation == s.observation
    invalid = sum(not s.valid for s in trajectory.steps)
    assert episode_metrics(trajectory)["invalid_rate"] == invalid / len(trajectory.steps)

    new, record = reflect(tiny_sampler, chat, old, trajectory, options, seed=0)
    assert record.raw and (new == old) != record.parsed

    path = tmp_path / "trajectories.jsonl"
    write_trajectories(path, [trajectory])
    assert read_trajectories(path) == [trajectory]

    # SFT rows of a won episode tokenise with the project's trainer code.
    won = play_scripted(make_env(game), 11)
    data = tokenize_sft_rows(winning_step_rows([won]), tiny_sampler.tokenizer, max_length=4096)
    assert data.rows == len(won.steps) and data.dropped == 0
