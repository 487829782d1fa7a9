import os

import pytest

from pipeline_lib.store import (
    atomic_dir,
    build_stage,
    cache_key,
    digest_path,
    invalidate,
    is_complete,
    owning_stage_folder,
    read_manifest,
    stage_dir,
    stage_problem,
    writer_busy,
)


def _visible_and_temp(folder):
    """Names in a folder, leaving out the writer-lock files, which stay on purpose."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_cache_key_depends_on_stage_config_and_inputs_only():
    key = cache_key("sample", "cfg1", {"model": "m1", "prompts": "p1"})
    assert key == cache_key("sample", "cfg1", {"prompts": "p1", "model": "m1"})  # order-free
    assert key != cache_key("revise", "cfg1", {"model": "m1", "prompts": "p1"})
    assert key != cache_key("sample", "cfg2", {"model": "m1", "prompts": "p1"})
    assert key != cache_key("sample", "cfg1", {"model": "m2", "prompts": "p1"})
    assert len(key) == 64


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "stage"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("partial")
            raise RuntimeError("killed")
    assert not final.exists()
    assert _visible_and_temp(tmp_path) == []


def test_atomic_dir_replaces_a_previous_output(tmp_path):
    final = tmp_path / "stage"
    for text in ("first", "second"):
        with atomic_dir(final) as tmp:
            (tmp / "out.txt").write_text(text)
    assert (final / "out.txt").read_text() == "second"
    assert _visible_and_temp(tmp_path) == ["stage"]


def test_build_stage_reuses_by_key_and_rebuilds_on_change(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "rows.txt").write_text("a\nb\n")
        return {"rows": 2}

    out = build_stage(tmp_path / "s", "prep", "k1", build, inputs={"x": "d"})
    assert is_complete(out, "k1") and read_manifest(out)["rows"] == 2
    build_stage(tmp_path / "s", "prep", "k1", build)
    assert len(calls) == 1
    build_stage(tmp_path / "s", "prep", "k2", build)
    assert len(calls) == 2 and is_complete(out, "k2") and not is_complete(out, "k1")
    build_stage(tmp_path / "s", "prep", "k2", build, force=True)
    assert len(calls) == 3


def test_digest_follows_content_and_uses_manifest(tmp_path):
    def build(folder):
        (folder / "a.txt").write_text("same")

    one = build_stage(tmp_path / "one", "s", "k", build)
    two = build_stage(tmp_path / "two", "s", "other-key", build)
    assert digest_path(one) == digest_path(two)  # same content, different keys
    (tmp_path / "f.txt").write_text("x")
    before = digest_path(tmp_path / "f.txt")
    (tmp_path / "f.txt").write_text("y")
    assert digest_path(tmp_path / "f.txt") != before
    with pytest.raises(FileNotFoundError):
        digest_path(tmp_path / "missing")


def test_stage_dir_is_a_function_of_stage_and_key(alignflow_home):
    from pipeline_lib.store import stage_dir

    assert stage_dir("sample", "ab" * 32) == stage_dir("sample", "ab" * 32)
    assert stage_dir("sample", "ab" * 32) != stage_dir("revise", "ab" * 32)
    assert stage_dir("sample", "ab" * 32).is_relative_to(alignflow_home / "stages")


def test_link_replaces_atomically_and_is_relative(tmp_path):
    from pipeline_lib.store import link

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "run" / "stage").mkdir(parents=True)  # a real folder from before is replaced too
    link(tmp_path / "run" / "stage", tmp_path / "one")
    link(tmp_path / "run" / "stage", tmp_path / "two")
    assert (tmp_path / "run" / "stage").resolve() == (tmp_path / "two").resolve()
    assert not os.path.isabs(os.readlink(tmp_path / "run" / "stage"))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["stage"]


def test_leftovers_of_a_killed_writer_are_swept_and_nothing_else(tmp_path):
    leftovers = [tmp_path / ".stage.tmp-deadbeef0000", tmp_path / ".stage.old-deadbeef0000"]
    unrelated = [tmp_path / ".stage-2.tmp-deadbeef0000", tmp_path / ".stage.x.tmp-1", tmp_path / ".other"]
    for path in leftovers + unrelated:
        path.mkdir()
    with atomic_dir(tmp_path / "stage") as tmp:
        (tmp / "x").write_text("1")
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in unrelated)


_RACER = """
import sys, time
from pathlib import Path
from pipeline_lib.store import build_stage

def build(folder):
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(1.0)
    (folder / "out.txt").write_text("done")

build_stage(Path(sys.argv[1]), "race", "k", build)
print((Path(sys.argv[1]) / "out.txt").read_text())
"""


def test_concurrent_builds_of_one_key_build_once(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    log = tmp_path / "builds.log"
    racers = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / "stage"), str(log)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert outputs == ["done", "done"]
    assert log.read_text().splitlines() == ["built"]


def test_folder_digest_is_remembered_until_files_change(tmp_path, alignflow_home, monkeypatch):
    import pipeline_lib.store.digests as store

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 1000)
    first = digest_path(folder)

    def no_rehash(_folder):
        raise AssertionError("a remembered digest must not be recomputed")

    monkeypatch.setattr(store, "digest_tree", no_rehash)
    assert digest_path(folder) == first
    monkeypatch.undo()
    (folder / "weights.bin").write_bytes(b"\1" * 1000)  # same size
    assert digest_path(folder) != first


def test_source_digest_covers_a_package_and_changes_with_its_code(tmp_path, monkeypatch):
    import importlib
    import sys

    from pipeline_lib.store import source_digest

    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rules.py").write_text("LIMIT = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fakepkg")
    first = source_digest(module)
    (package / "rules.py").write_text("LIMIT = 2\n")
    assert source_digest(module) != first
    sys.modules.pop("fakepkg", None)


def _parquet_stage(tmp_path, key="k1"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def build(folder):
        pq.write_table(pa.table({"text": [f"row {i} " * 20 for i in range(200)]}), folder / "rows.parquet")
        (folder / "report.json").write_text('{"rows": 200}')

    return build_stage(tmp_path / "s", "prep", key, build)


def test_a_truncated_or_missing_output_file_fails_the_cheap_check(tmp_path):
    out = _parquet_stage(tmp_path)
    assert stage_problem(out, "k1") is None
    rows = out / "rows.parquet"
    data = rows.read_bytes()
    rows.write_bytes(data[: len(data) // 2])
    assert "rows.parquet has" in stage_problem(out, "k1") and not is_complete(out, "k1")
    rows.unlink()
    assert stage_problem(out, "k1") == "rows.parquet is missing"


def test_a_parquet_file_with_a_broken_footer_fails_the_cheap_check_at_the_same_size(tmp_path):
    out = _parquet_stage(tmp_path)
    rows = out / "rows.parquet"
    data = bytearray(rows.read_bytes())
    data[-8:-4] = b"\xff\xff\xff\x7f"  # the footer length
    rows.write_bytes(bytes(data))
    assert "does not read as Parquet" in stage_problem(out, "k1")


def test_only_the_full_check_sees_same_size_content_changes(tmp_path):
    out = _parquet_stage(tmp_path)
    (out / "report.json").write_text('{"rows": 999}')  # same length, other bytes
    assert stage_problem(out, "k1") is None
    assert stage_problem(out, "k1", full=True) == "its content digest changed"


def test_verification_ignores_paths_and_times_so_a_copied_home_is_reused(tmp_path):
    import shutil

    out = _parquet_stage(tmp_path)
    copy = tmp_path / "elsewhere" / "s"
    shutil.copytree(out, copy)  # new inode, ctime and mtime for every file
    assert stage_problem(copy, "k1", full=True) is None


def test_a_manifest_written_before_file_sizes_were_recorded_is_checked_by_its_digest(tmp_path):
    import json

    out = _parquet_stage(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert stage_problem(out, "k1") is None
    (out / "report.json").write_text('{"rows": 999}')
    assert stage_problem(out, "k1") == "its content digest changed"


def test_a_stage_that_fails_verification_is_rebuilt(tmp_path):
    out = _parquet_stage(tmp_path)
    (out / "rows.parquet").write_bytes(b"PAR1")
    _parquet_stage(tmp_path)  # same key: reuse is refused, so it builds again
    assert stage_problem(out, "k1", full=True) is None


def test_invalidate_makes_the_next_build_run(tmp_path):
    out = _parquet_stage(tmp_path)
    invalidate(out)
    assert stage_problem(out, "k1") == "no manifest"
    assert _parquet_stage(tmp_path) == out and is_complete(out, "k1")


def test_writer_busy_sees_another_process_holding_the_lock(tmp_path):
    import subprocess
    import sys

    final = tmp_path / "s"
    assert not writer_busy(final)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, fcntl, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(tmp_path / ".s.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert writer_busy(final)
    finally:
        holder.kill()
        holder.wait()
    assert not writer_busy(final)


def test_owning_stage_folder_finds_the_stage_of_a_file_inside_it(alignflow_home):
    def build(folder):
        (folder / "sub").mkdir()
        (folder / "sub" / "rows.txt").write_text("x")

    out = build_stage(stage_dir("owner-test", "a" * 64), "owner-test", "a" * 64, build)
    assert owning_stage_folder(out / "sub" / "rows.txt") == out
    assert owning_stage_folder(out) == out
    assert owning_stage_folder(alignflow_home) is None
