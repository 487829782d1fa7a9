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
