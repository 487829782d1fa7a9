"""The command line as a user meets it: one-line errors, non-zero exits, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_unknown_override_is_one_line_and_exit_2(capsys):
    code = main(["run", str(REPO / "configs/evaluate-tiny.yaml"), "train.lrr=1e-5"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "unknown key 'train.lrr'" in err
    assert "Traceback" not in err


def test_bad_value_and_missing_recipe(capsys):
    assert main(["check", str(REPO / "configs/evaluate-tiny.yaml"), "sampler.temperature=-1"]) == 2
    assert "'sampler.temperature'" in capsys.readouterr().err
    assert main(["run", "configs/does-not-exist.yaml"]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_check_prints_resolved_recipe_with_overrides(capsys):
    assert main(["check", str(REPO / "configs/evaluate-tiny.yaml"), "train.lr=1e-5"]) == 0
    out = capsys.readouterr().out
    assert "lr: 1.0e-05" in out and "# config hash " in out


def test_unknown_stage_for_from_stage_is_a_user_error(capsys):
    code = main(["run", str(REPO / "configs/evaluate-tiny.yaml"), "--from-stage", "nonsense"])
    assert code == 2
    assert "not a stage of this flow" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_recipe_validates(recipe):
    assert main(["check", str(REPO / "configs" / recipe)]) == 0


def test_console_script_exit_code_from_a_real_process(tmp_path):
    # The installed entry point, as a shell would run it.
    script = Path(sys.executable).with_name("alignflow")
    result = subprocess.run(
        [str(script), "run", str(REPO / "configs/evaluate-tiny.yaml"), "nope.key=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()
    ] and "unknown key 'nope'" in result.stderr
