"""Finished stages are verified before reuse, survive a moved home, and are keyed by what they produce.

Each run here is a real `alignflow run` in a home of its own, as a user's
command would be, so no test depends on what another left in the session's home.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline_lib.store import read_manifest, stage_problem

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(Path(sys.executable).with_name("alignflow"))
SFT = str(REPO / "configs" / "sft-tiny.yaml")

# One xdist worker for the module: its tests share one finished home (finished_home).
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.xdist_group("stage-integrity")]


def _env(home: Path) -> dict[str, str]:
    """A user's environment with this home: none of the test session's Prefect or MLflow settings,
    which point at the session's own home (MLflow even exports the tracking URI it was given), but its
    Prefect API, which records the run (as `alignflow ui`'s would) and keeps no stage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, "ALIGNFLOW_HOME": str(home), "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}


def _run(home: Path, recipe: str = SFT, *settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, "run", recipe, *settings], capture_output=True, text=True, timeout=900, cwd=REPO, env=_env(home)
    )


def _ok(home: Path, recipe: str = SFT, *settings: str) -> subprocess.CompletedProcess:
    done = _run(home, recipe, *settings)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _stage_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("stage ")]


def _outputs(home: Path) -> dict[str, str]:
    """stage/key folder -> content digest, for every finished stage in a home."""
    return {
        f"{folder.parent.name}/{folder.name}": read_manifest(folder)["digest"]
        for folder in sorted((home / "stages").glob("*/*"))
        if folder.is_dir() and read_manifest(folder)
    }


def _run_dir(home: Path) -> Path:
    (run,) = (home / "runs").iterdir()
    return run


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory) -> Path:
    """A home where configs/sft-tiny.yaml ran to the end; tests work on copies of it."""
    home = tmp_path_factory.mktemp("finished") / "home"
    _ok(home)
    return home


@pytest.fixture
def home(finished_home, tmp_path) -> Path:
    """A copy of the finished home of this test's own, moved there from where it was made."""
    copy = tmp_path / "home"
    shutil.copytree(finished_home, copy, symlinks=True)
    return copy


def test_identical_sft_runs_in_fresh_homes_share_every_key(finished_home, tmp_path):
    second = tmp_path / "second"
    _ok(second)
    # Timings differ between the two runs; what later stages read does not.
    assert _outputs(finished_home) == _outputs(second)
    policy = _run_dir(second) / "round-1" / "train-policy"
    assert read_manifest(policy)["train"]["runtime_s"] > 0, "timings stay on record, in the manifest"
    assert "runtime_s" not in json.loads((policy / "train_metrics.json").read_text())


# SEFT's stages (the reviser's included) in a fresh home get the very keys and outputs another fresh home
# recorded on 0.7: tests/test_stage_keys.py, which makes a second pair of fresh-home SEFT runs here redundant.


def test_a_moved_home_resumes_with_every_stage_reused(finished_home, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(finished_home, moved, symlinks=True)
    rerun = _ok(moved)
    lines = _stage_lines(rerun.stderr)
    assert lines and all(line.endswith("reusing finished output") for line in lines), lines
    assert "Traceback" not in rerun.stderr
    # MLflow's artifact paths follow the home.
    import sqlite3

    assert (moved / "mlflow" / "mlflow.db").is_file()
    with sqlite3.connect(moved / "mlflow" / "mlflow.db") as db:
        uris = [row[0] for row in db.execute("SELECT artifact_uri FROM runs")]
    assert uris and all(str(moved) in uri for uri in uris), uris


def test_a_truncated_output_is_rebuilt_and_a_corrupt_input_stops_with_one_line(home):
    answers = (_run_dir(home) / "round-0" / "generate-answers").resolve()
    samples = answers / "samples.parquet"
    samples.write_bytes(samples.read_bytes()[:100])

    rerun = _ok(home)
    assert "stage generate-answers (round-0/generate-answers): rebuilding: the finished output failed verification " \
        "(samples.parquet has 100 bytes" in rerun.stderr  # fmt: skip
    assert stage_problem(answers, read_manifest(answers)["key"], full=True) is None
    assert pq.read_table(samples).num_rows == 8

    # Same size and a readable footer pass the cheap check; the consumer must not read it.
    rows_dir = (_run_dir(home) / "round-1" / "build-training-rows").resolve()
    (rows,) = rows_dir.glob("*.parquet")
    data = bytearray(rows.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[4 : len(data) - 8 - footer] = b"\xab" * (len(data) - 12 - footer)
    rows.write_bytes(bytes(data))
    shutil.rmtree((_run_dir(home) / "round-1" / "train-policy").resolve())

    failed = _run(home)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("alignflow: error:")]
    assert f"stage train-policy cannot read its input 'rows': the output of stage build-training-rows at {rows_dir}" in error

    healed = _ok(home)
    assert "stage build-training-rows (round-1/build-training-rows): rebuilding" in healed.stderr
    assert "stage train-policy (round-1/train-policy): running" in healed.stderr


def test_verify_compares_content_digests_of_reused_stages(home):
    scores = (_run_dir(home) / "round-1" / "score").resolve()
    target = max((p for p in scores.iterdir() if p.suffix == ".json" and p.name != "manifest.json"), key=lambda p: p.stat().st_size)
    text = target.read_text()
    target.write_text(text.replace("0", "1", 1) if "0" in text else text.replace("1", "0", 1))  # same size

    plain = _ok(home)
    assert "stage score (round-1/score): reusing finished output" in plain.stderr
    verified = _ok(home, SFT, "--verify")
    assert "stage score (round-1/score): rebuilding: the finished output failed verification " \
        "(its content digest changed)" in verified.stderr  # fmt: skip
    assert target.read_text() == text


def test_a_run_that_waits_for_another_runs_stage_says_so_and_reuses_it(home, tmp_path):
    answers = (_run_dir(home) / "round-1" / "generate-answers").resolve()
    built_elsewhere = tmp_path / "built-elsewhere"
    shutil.move(answers, built_elsewhere)
    # Another run building the same stage: it holds the stage's writer lock until told to put its output in place.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            lock = open({str(answers.with_name("." + answers.name + ".lock"))!r}, "a")
            fcntl.flock(lock, fcntl.LOCK_EX)
            print("locked", flush=True)
            sys.stdin.readline()
            os.rename({str(built_elsewhere)!r}, {str(answers)!r})
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = tmp_path / "waiting.log"
    try:
        assert holder.stdout.readline().strip() == "locked"
        with open(log, "w") as out:
            waiting = subprocess.Popen(
                [SCRIPT, "run", SFT], stdout=subprocess.DEVNULL, stderr=out, cwd=REPO, env=_env(home),
            )  # fmt: skip
        deadline = time.monotonic() + 300
        while "waiting for another run" not in log.read_text():
            assert waiting.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        holder.communicate("go\n", timeout=30)
        assert waiting.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        for process in (holder, locals().get("waiting")):
            if process is not None and process.poll() is None:
                process.kill()
    stderr = log.read_text()
    assert "stage generate-answers (round-1/generate-answers): waiting for another run building it" in stderr
    assert "stage generate-answers (round-1/generate-answers): reusing the output the other run built" in stderr
    assert "stage generate-answers (round-1/generate-answers): running" not in stderr
