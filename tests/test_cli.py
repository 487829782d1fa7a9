"""The command line as a user meets it: one-line errors, non-zero exits, no tracebacks."""

import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.mark.integration
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


def test_a_directory_as_recipe_is_named_as_one(capsys):
    assert main(["check", str(REPO / "configs")]) == 2
    err = capsys.readouterr().err
    assert f"{REPO / 'configs'} is a directory, not a recipe file" in err
    assert "not found" not in err


def test_missing_vllm_environment_names_the_interpreter_it_checked(tmp_path, monkeypatch, capsys):
    expected = tmp_path / "no-vllm" / "bin" / "python"
    monkeypatch.setenv("ALIGNFLOW_VLLM_PYTHON", str(expected))
    assert main(["run", str(REPO / "configs/evaluate-tiny.yaml"), "sampler.backend=vllm"]) == 2
    err = capsys.readouterr().err
    assert f"sampler.backend=vllm needs the vLLM environment, but there is no interpreter at {expected}" in err
    assert "ALIGNFLOW_VLLM_PYTHON" in err and "Traceback" not in err


def test_home_under_a_regular_file_is_one_line_and_help_still_works(tmp_path):
    (tmp_path / "file").write_text("")
    # Not creatable for anyone, root included (NotADirectoryError).
    _assert_unusable_home_is_reported(tmp_path / "file" / "home")


def test_read_only_home_is_one_line_and_help_still_works():
    with tempfile.TemporaryDirectory() as scratch:
        # pytest's tmp_path is private to root; an unprivileged user must reach the home to meet its mode.
        Path(scratch).chmod(0o755)
        home = Path(scratch) / "home"
        home.mkdir(mode=0o555)
        _assert_unusable_home_is_reported(home, _unprivileged())


def _unprivileged() -> list[str]:
    """A command prefix that runs as a user for whom a 555 folder is read-only (root writes into it anyway)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no user for whom a 555 folder is read-only")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # A checkout under a private folder (mktemp -d makes it 0700) is out of that user's reach.
    reach = subprocess.run([*prefix, "test", "-r", str(REPO / "flows" / "cli.py")], check=False)
    if reach.returncode != 0:
        pytest.skip(f"the unprivileged user cannot read the checkout at {REPO}")
    return prefix


def _assert_unusable_home_is_reported(home: Path, prefix: list[str] = ()) -> None:
    """Every command says, in one line and with exit 2, which home is unusable; the help texts need no home."""
    for help_args in (["--help"], ["run", "--help"]):
        result = _fresh_cli(help_args, home, prefix)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert result.stdout.startswith("usage: alignflow")
    result = _fresh_cli(["check", str(REPO / "configs/evaluate-tiny.yaml")], home, prefix)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"the alignflow home {home} is not a usable folder" in result.stderr
    assert "set ALIGNFLOW_HOME to a writable folder" in result.stderr


def _fresh_cli(args: list[str], home: Path, prefix: list[str]) -> subprocess.CompletedProcess:
    """The CLI in a new interpreter: the home is first used on import, before `main` runs."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "flows.cli", *args],
        env={**os.environ, "ALIGNFLOW_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
