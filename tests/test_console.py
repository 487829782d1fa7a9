"""What `alignflow run` prints: one bar per stage that reports progress, no library bars or log lines, and
everything the libraries said in the log file its report names; `--verbose` shows the libraries again."""

from __future__ import annotations

import os
import re
import warnings
import subprocess
import sys
from pathlib import Path

import pytest

from flows.console import quiet_libraries

REPO = Path(__file__).resolve().parents[1]
RECIPE = "configs/sft-tiny.yaml"


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a new interpreter, as a user starts it: quiet mode must act before the libraries load."""
    # Nothing of this worker's own Prefect and MLflow settings but its Prefect API: the run keeps to its home.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "TQDM_", "HF_HUB_DISABLE"))}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", RECIPE, *args],
        env={**env, "ALIGNFLOW_HOME": str(home), "PREFECT_API_URL": os.environ["PREFECT_API_URL"]},
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def bar_frames(stderr: str) -> list[str]:
    """Every drawn state of every progress bar: tqdm redraws a line after a carriage return."""
    return [frame for frame in re.split(r"[\r\n]", stderr) if "%|" in frame]


@pytest.mark.integration
def test_run_shows_one_bar_per_stage_and_sends_library_output_to_its_log(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    stages = re.findall(r"^stage (\S+) \((\S+)\): running$", result.stderr, flags=re.MULTILINE)
    labels = {f"{name} ({where}): " for name, where in stages}
    frames = bar_frames(result.stderr)
    strays = [frame for frame in frames if not any(frame.startswith(label) for label in labels)]
    assert not strays, f"bars that belong to no stage: {strays[:3]}"
    # What each bar counts, out of its total, with an ETA.
    assert any(re.match(r"generate-answers \(round-0/generate-answers\): sampling: 100%\|.*\| 8/8 \[", f) for f in frames)
    assert any(re.match(r"train-policy \(round-1/train-policy\): training sft: .*\| 2/2 \[.*loss=", f) for f in frames)
    assert "<" in next(f for f in frames if f.startswith("train-policy")), "an ETA"
    # One bar per stage: every frame of a stage shows the same phase.
    phases: dict[str, set[str]] = {}
    for frame in frames:
        label = next(label for label in labels if frame.startswith(label))
        phases.setdefault(label, set()).add(frame[len(label) :].split(":")[0])
    assert all(len(p) == 1 for p in phases.values()), phases
    log_file = Path(re.search(r"^log: +(\S+)$", result.stdout, flags=re.MULTILINE)[1])
    assert "Loading weights" not in result.stderr and " INFO " not in result.stderr
    logged = log_file.read_text()
    assert "mlflow" in logged and "Successfully registered model" in logged

    again = run_cli(tmp_path / "home", "--verbose", "--from-stage", "train-policy")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "\nlog: " not in again.stdout
    assert any(frame.startswith("Loading weights") for frame in bar_frames(again.stderr))


def test_quiet_ends_with_its_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command run in-process (as tests and notebooks do) leaves nothing of its quiet to the next one."""
    monkeypatch.setenv("ALIGNFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    from transformers.utils import logging as hf_logging

    transformers = hf_logging.get_logger("transformers")  # as transformers sets it up
    before = (transformers.handlers[:], transformers.propagate, transformers.level, os.environ.get("MLFLOW_CONFIGURE_LOGGING"))
    with quiet_libraries("run") as log_file:
        assert os.environ["TQDM_DISABLE"] == "1"
        transformers.warning("a library's warning")
        warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
        handler = transformers.handlers[0]
    assert "TQDM_DISABLE" not in os.environ
    assert (transformers.handlers, transformers.propagate, transformers.level, os.environ.get("MLFLOW_CONFIGURE_LOGGING")) == before
    assert handler.stream is None, "the log file is closed"
    logged = log_file.read_text()
    assert "a library's warning" in logged and "a deprecation" in logged
