import os

import pytest

from pipeline_lib.store import atomic_dir, build_stage, cache_key, digest_path, is_complete, read_manifest


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
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_a_previous_output(tmp_path):
    final = tmp_path / "stage"
    for text in ("first", "second"):
        with atomic_dir(final) as tmp:
            (tmp / "out.txt").write_text(text)
    assert (final / "out.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


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


def test_link_replaces_atomically(tmp_path):
    from pipeline_lib.store import link

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    link(tmp_path / "run" / "stage", tmp_path / "one")
    link(tmp_path / "run" / "stage", tmp_path / "two")
    assert (tmp_path / "run" / "stage").resolve() == (tmp_path / "two").resolve()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["stage"]


def test_leftovers_of_a_killed_writer_are_swept(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f".stage.tmp-{dead.pid}-deadbeef"
    leftover.mkdir()
    live = tmp_path / f".stage.tmp-{os.getpid()}-cafef00d"
    live.mkdir()
    with atomic_dir(tmp_path / "stage") as tmp:
        (tmp / "x").write_text("1")
    assert not leftover.exists()
    assert live.exists()  # a live writer's work in progress is never touched


def test_folder_digest_is_remembered_until_files_change(tmp_path, alignflow_home):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 1000)
    first = digest_path(folder)
    memos = list((alignflow_home / "digests").iterdir())
    assert any(m.read_text() == first for m in memos)
    assert digest_path(folder) == first
    (folder / "weights.bin").write_bytes(b"\1" * 1001)
    assert digest_path(folder) != first
