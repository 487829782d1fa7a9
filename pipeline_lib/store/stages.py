"""Stage outputs on disk: cache keys, manifests, writer locks and atomic builds.

A stage output is a folder addressed by its key, ``stages/<stage>/<key>/``,
that appears under that name only once complete, with a ``manifest.json``
recording the key. Resume is then a property of the file system: a killed
stage leaves at most a hidden temporary folder, a finished one is found by
its key alone, and every run whose stage has the same inputs shares it. Run
folders link to the stage folders they used.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from pipeline_lib.core.home import alignflow_home
from pipeline_lib.store.digests import MANIFEST, content_files, digest_tree, read_manifest, remembered_digest
from pipeline_lib.store.files import atomic_write_text, temp_sibling

# Test switch: a comma-separated list of stage names whose build fails on
# purpose, to prove that a rerun resumes after a crash in that stage. With
# FAIL_WHILE_ENV naming a file, only while that file exists: a long-running
# server keeps its environment, so removing the file is how a test "fixes the
# cause" before retrying the run.
FAIL_STAGE_ENV = "ALIGNFLOW_FAIL_STAGE"
FAIL_WHILE_ENV = "ALIGNFLOW_FAIL_WHILE"
# Stage folders are named by this many hex digits of their key.
_KEY_CHARS = 24


class InjectedFailure(RuntimeError):
    """Raised by a stage named in ALIGNFLOW_FAIL_STAGE; stands in for a crash."""


def cache_key(stage: str, config_hash: str, input_digests: Mapping[str, str]) -> str:
    """The key of a stage: its name, the hash of the config it reads, and its inputs' digests.

    Nothing run-specific (flow-run id, time, output path) goes in, so a retry, a
    rerun of the same command and a new run with the same inputs share the key.
    """
    payload = json.dumps(
        {"stage": stage, "config": config_hash, "inputs": dict(sorted(input_digests.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def stage_dir(stage: str, key: str) -> Path:
    """Where the output of ``stage`` for ``key`` lives, whichever run asks for it."""
    return alignflow_home() / "stages" / stage / key[:_KEY_CHARS]


def link(link_path: Path, target: Path) -> None:
    """Point ``link_path`` at ``target`` with a symlink, replacing what was there in one rename.

    The link is relative, so moving the whole home (runs and stages together) keeps it valid.
    """
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if link_path.is_dir() and not link_path.is_symlink():
        shutil.rmtree(link_path)
    tmp = temp_sibling(link_path, "link")
    os.symlink(os.path.relpath(Path(target).resolve(), link_path.parent.resolve()), tmp)
    os.replace(tmp, link_path)


@contextmanager
def writer_lock(final: Path) -> Iterator[None]:
    """Hold the one lock for writing ``final``, across processes (two runs may share a stage).

    Every writer holds it for as long as its temporary folder exists, so whoever
    holds it knows that any temporary sibling it finds is a killed writer's leftover.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(f".{final.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_busy(final: Path) -> bool:
    """Whether another process is writing ``final`` right now (holds its writer lock)."""
    lock = final.with_name(f".{final.name}.lock")
    if not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def owning_stage_folder(path: Path) -> Path | None:
    """The stage output folder that ``path`` (the folder itself, or a file in it) belongs to."""
    path = Path(path).resolve()
    stages = alignflow_home() / "stages"
    for folder in (path, *path.parents):
        if folder.parent.parent == stages and (folder / MANIFEST).is_file():
            return folder
        if folder == stages:
            break
    return None


def _sweep_leftovers(final: Path) -> None:
    """Remove what killed writers of ``final`` left behind; call with its writer lock held."""
    for kind in ("tmp", "old"):
        for leftover in final.parent.glob(f".{glob.escape(final.name)}.{kind}-*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    manifest = {"digest": digest_tree(folder), "files": _file_sizes(folder), **fields}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def _file_sizes(folder: Path) -> dict[str, int]:
    return {file.relative_to(folder).as_posix(): file.stat().st_size for file in content_files(folder)}


def stage_problem(folder: Path, key: str, full: bool = False) -> str | None:
    """Why ``folder`` cannot be reused as the output for ``key``; None when it can.

    The cheap check (every file the manifest lists is there with its recorded
    size, and each Parquet footer reads) catches truncation and deletion
    without hashing gigabytes; ``full`` compares the content digest too.
    Nothing here looks at modification times or absolute paths, so a home
    restored from a backup or mounted elsewhere is still reused.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return "no manifest" if folder.exists() else "not built yet"
    if manifest.get("key") != key:
        return "built for another key"
    files = manifest.get("files")
    if files is None:
        # Written before sizes were recorded: only the digest can vouch for it.
        return None if content_matches(folder) else "its content digest changed"
    for name, size in files.items():
        problem = _file_problem(folder / name, size)
        if problem:
            return f"{name} {problem}"
    if full and digest_tree(folder) != manifest.get("digest"):
        return "its content digest changed"
    return None


def _file_problem(path: Path, size: int) -> str | None:
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if actual != size:
        return f"has {actual} bytes, {size} recorded"
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(path)
        except (pa.ArrowException, OSError) as err:
            return f"does not read as Parquet ({str(err).splitlines()[0]})"
    return None


def content_matches(folder: Path) -> bool:
    """Whether a stage output's files still hash to its manifest's digest; remembered per file state."""
    return remembered_digest(Path(folder)) == (read_manifest(folder) or {}).get("digest")


def invalidate(folder: Path) -> None:
    """Mark a stage output as not to be reused: without its manifest the next run rebuilds it."""
    (Path(folder) / MANIFEST).unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path, *, locked: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    Takes ``final``'s writer lock unless the caller already holds it (``locked=True``).
    """
    final = Path(final)
    with nullcontext() if locked else writer_lock(final):
        _sweep_leftovers(final)
        with _filled_then_renamed(final) as tmp:
            yield tmp


@contextmanager
def _filled_then_renamed(final: Path) -> Iterator[Path]:
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        # A directory cannot be replaced by rename while it exists; move the old
        # one aside first so the window without a complete output is one rename.
        old = temp_sibling(final, "old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def is_complete(folder: Path, key: str) -> bool:
    return stage_problem(folder, key) is None


def build_stage(
    folder: Path,
    stage: str,
    key: str,
    build: Callable[[Path], Mapping[str, Any] | None],
    inputs: Mapping[str, str] | None = None,
    force: bool = False,
    scratch: Path | None = None,
) -> Path:
    """Build a stage output once: reuse a complete folder with the same key, else build it atomically.

    ``build`` fills the temporary folder and may return extra manifest fields
    (row counts, metrics); timings and the key are recorded here. ``scratch``
    is a folder the build may keep progress in across attempts (sampling
    shards); it is removed once the output is in place. Builds of one folder
    are serialised across processes, and a build that waited for another
    reuses its result instead of replacing it.
    """
    folder = Path(folder)
    if not force and is_complete(folder, key):
        return folder
    with writer_lock(folder):
        if not force and is_complete(folder, key):
            return folder
        if _failure_injected(stage):
            raise InjectedFailure(f"failure injected into stage {stage!r} by {FAIL_STAGE_ENV} (a switch for tests)")
        started = time.time()
        with atomic_dir(folder, locked=True) as tmp:
            extra = dict(build(tmp) or {})
            write_manifest(
                tmp,
                stage=stage,
                key=key,
                inputs=dict(inputs or {}),
                started_at=started,
                seconds=round(time.time() - started, 3),
                **extra,
            )
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _failure_injected(stage: str) -> bool:
    if stage not in os.environ.get(FAIL_STAGE_ENV, "").split(","):
        return False
    condition = os.environ.get(FAIL_WHILE_ENV)
    return condition is None or Path(condition).exists()
