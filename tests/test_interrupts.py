"""Ctrl-C always stops a run (issue 19), even when its KeyboardInterrupt is swallowed where it lands.

A real interrupt is lost the way issue 19 saw it: raised inside a ``__del__``,
where Python can only drop it. Ctrl-C during sampling is covered by
test_kill_resume; here: inside training, pressed repeatedly, and lost.
"""

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from prefect import flow

from flow_runs import last_flow_run, start_run, stop_leftovers
from flows.cli import main
from pipeline_lib.core import interrupts
from pipeline_lib.sampling import Sample, SamplingParams, sample_to_parquet
from pipeline_lib.store import build_stage, is_complete, read_manifest
from tasks.stage import OptionalInput, stage

REPO = Path(__file__).resolve().parents[1]


class _LosesAnInterrupt:
    def __del__(self) -> None:
        # The handler runs inside raise_signal, so its KeyboardInterrupt is raised in
        # this __del__, which Python reports (as unraisable) and then carries on.
        signal.raise_signal(signal.SIGINT)


def lose_an_interrupt() -> None:
    """Ctrl-C this process with the KeyboardInterrupt landing in a ``__del__``, as in issue 19."""
    _LosesAnInterrupt()  # collected at once
    assert interrupts.interrupted(), "the interrupt should be recorded although its exception was lost"


def test_an_interrupt_is_raised_and_recorded_until_the_block_ends():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.sticky_interrupts():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert interrupts.interrupted()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()  # sticky: every check raises again
    assert signal.getsignal(signal.SIGINT) is before
    assert not interrupts.interrupted()
    interrupts.check()


def test_an_interrupt_lost_in_a_del_is_raised_by_the_next_check_and_prints_nothing(capfd):
    with interrupts.sticky_interrupts():
        lose_an_interrupt()  # returns: the run would carry on from here
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err


def test_an_error_an_interrupt_turned_into_leaves_the_block_as_the_interrupt():
    # pydantic-core turns a KeyboardInterrupt raised while it serialises into a
    # PydanticSerializationError; seen when ctrl-C came as the Prefect API started.
    with pytest.raises(KeyboardInterrupt) as caught, interrupts.sticky_interrupts():
        lose_an_interrupt()
        raise ValueError("Error calling function `_ser_model`: KeyboardInterrupt")
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(ValueError), interrupts.sticky_interrupts():
        raise ValueError("no interrupt: the error stays what it is")


def test_a_ctrl_c_soon_after_another_is_only_recorded(monkeypatch):
    with interrupts.sticky_interrupts():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # mashing ctrl-C: must not cut the shutdown short
        monkeypatch.setattr(interrupts, "REPEAT_AFTER_S", 0.0)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a later one raises again


class _ShardCounter:
    name, model_id = "fake", "fake-model"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts: list[str], params: SamplingParams) -> list[Sample]:
        self.calls += 1
        lose_an_interrupt()
        return [Sample(i, 0, "answer", 3, 1, "stop") for i in range(len(prompts))]


def test_sampling_stops_at_the_next_shard_keeping_the_finished_one(tmp_path):
    sampler = _ShardCounter()
    ids = [f"p{i}" for i in range(6)]
    with interrupts.sticky_interrupts(), pytest.raises(KeyboardInterrupt):
        sample_to_parquet(sampler, ids, ids, SamplingParams(), tmp_path / "out.parquet", tmp_path / "shards", 2)
    assert sampler.calls == 1
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-00000.json", "shard-00000.parquet"]


def _says(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def test_training_stops_at_the_next_step(tmp_path, monkeypatch):
    from pipeline_lib.models import resolve_model
    from pipeline_lib.training.objectives import train_sft
    from pipeline_lib.training.config import TrainConfig
    from pipeline_lib.training.runner import OptimizerTimer

    steps = []

    def step_losing_an_interrupt(self, args, state, control, **kwargs):
        steps.append(state.global_step)
        lose_an_interrupt()

    monkeypatch.setattr(OptimizerTimer, "on_optimizer_step", step_losing_an_interrupt)
    rows = [{"prompt": [_says("user", f"{i}+{i}?")], "completion": [_says("assistant", str(2 * i))]} for i in range(8)]
    config = TrainConfig(lr=1e-3, epochs=2, batch_size=2, max_length=64)  # 8 steps
    out = tmp_path / "model"
    with interrupts.sticky_interrupts(), pytest.raises(KeyboardInterrupt):
        train_sft(resolve_model("tiny-llama"), rows, out, config, progress=False, work_dir=tmp_path / "work")
    assert len(steps) == 1, "training goes no further than the step the interrupt came in"
    assert not out.exists()


EXECUTED: list[str] = []


@stage("interrupt-test-first")
def _first(folder: Path, token: int) -> None:
    (folder / "token.txt").write_text(str(token))
    lose_an_interrupt()


@stage("interrupt-test-second")
def _second(folder: Path, first: OptionalInput = None) -> None:
    EXECUTED.append("second")


@flow(name="interrupt-test")
def _two_stages(run_dir: str, token: int) -> None:
    run = Path(run_dir)
    first = _first.run(run / "first", token=token)
    _second.run(run / "second", first=first)


@pytest.mark.integration
def test_a_flow_whose_interrupt_was_lost_stops_at_the_stage_boundary_and_is_crashed(tmp_path):
    EXECUTED.clear()
    with interrupts.sticky_interrupts(), pytest.raises(KeyboardInterrupt):
        _two_stages(str(tmp_path), time.time_ns())  # a new token: the first stage runs, never reused
    assert EXECUTED == [], "no stage starts after the interrupt"
    first = (tmp_path / "first").resolve()
    assert is_complete(first, read_manifest(first)["key"]), "the stage that finished is kept for the rerun"
    assert last_flow_run({"run_dir": str(tmp_path)}).state.name == "Crashed"


def _ctrl_c(flow, flow_run, state) -> None:
    signal.raise_signal(signal.SIGINT)


@flow(name="interrupt-test-round", on_completion=[_ctrl_c])
def _round() -> None:
    pass


@flow(name="interrupt-test-rounds")
def _round_then_stage(run_dir: str) -> None:
    _round()  # ctrl-C in the round's teardown: Prefect drops it, its state being final already
    _second.run(Path(run_dir) / "second")


@pytest.mark.integration
def test_an_interrupt_prefect_drops_in_a_round_teardown_crashes_the_run_at_the_next_stage(tmp_path):
    EXECUTED.clear()
    with interrupts.sticky_interrupts(), pytest.raises(KeyboardInterrupt):
        _round_then_stage(str(tmp_path))
    assert EXECUTED == []
    assert last_flow_run({"run_dir": str(tmp_path)}).state.name == "Crashed"


@flow(name="interrupt-test-finishing")
def _finishes_despite_a_lost_interrupt(recipe, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    lose_an_interrupt()  # after the flow's last checkpoint
    return {}


@pytest.mark.integration
def test_a_run_that_finished_after_a_lost_interrupt_still_exits_130(monkeypatch, capsys):
    monkeypatch.setattr("flows.launch.flow_for", lambda method: _finishes_despite_a_lost_interrupt)
    assert main(["run", str(REPO / "configs" / "evaluate-tiny.yaml")]) == 130
    captured = capsys.readouterr()
    assert "interrupted; rerun the same command to resume" in captured.err
    assert "run folder:" not in captured.out


# transformers' bar for the training run, past its first step.
TRAINING = re.compile(r"sft:\s+\d+%\|[^|]*\|\s*[1-9]\d*/\d+")


@pytest.mark.integration
def test_ctrl_c_pressed_repeatedly_during_training_stops_the_run(alignflow_home, tmp_path):
    recipe = str(REPO / "configs" / "sft-tiny.yaml")
    settings = ["train.epochs=40"]  # 80 steps: training outlasts the test's interrupts by far
    log = tmp_path / "run.log"
    run = start_run(recipe, settings, log)
    try:
        deadline = time.monotonic() + 240
        while not TRAINING.search(log.read_text()):
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        children = psutil.Process(run.pid).children(recursive=True)
        assert children, "the run should have started its private Prefect API"
        # A first ctrl-C in training, then more while the run stops, one of them
        # after interrupts.REPEAT_AFTER_S, which raises again.
        for _ in range(4):
            try:
                os.killpg(run.pid, signal.SIGINT)
            except ProcessLookupError:
                break
            time.sleep(interrupts.REPEAT_AFTER_S / 2.5)
        assert run.wait(timeout=120) == 130, log.read_text()[-3000:]
        alive = stop_leftovers(children)
        assert not alive, f"left running: {[p.pid for p in alive]}"
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    assert "rerun the same command to resume" in text
    assert "sft: 100%" not in text and "(round-1/generate-answers)" not in text, "the run stopped inside training"
    assert last_flow_run({"recipe": recipe, "overrides": settings}).state.name == "Crashed"
