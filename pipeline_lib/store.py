"""Stage outputs on disk: atomic writes, manifests, digests and cache keys.

A stage output is a folder that appears under its final name only once it is
complete, with a ``manifest.json`` recording the key it was built for. That
makes resume a property of the file system: a killed stage leaves at most a
hidden temporary folder, and a finished one is recognised by its key alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


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


def digest_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def digest_path(path: str | Path) -> str:
    """Content digest of a file or folder; a folder with a manifest is known by the digest recorded there."""
    path = Path(path)
    if path.is_file():
        return digest_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot digest {path}: no such file or folder")
    recorded = (read_manifest(path) or {}).get("digest")
    return recorded or digest_tree(path)


def digest_tree(folder: Path) -> str:
    """Digest of every file under a folder except the manifest, by relative path and content."""
    sha = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        sha.update(file.relative_to(folder).as_posix().encode() + b"\0")
        sha.update(digest_file(file).encode())
    return sha.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    manifest = {"digest": digest_tree(folder), **fields}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        # A directory cannot be replaced by rename while it exists; move the old
        # one aside first so the window without a complete output is one rename.
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def is_complete(folder: Path, key: str) -> bool:
    manifest = read_manifest(folder)
    return bool(manifest) and manifest.get("key") == key


def build_stage(
    folder: Path,
    stage: str,
    key: str,
    build: Callable[[Path], Mapping[str, Any] | None],
    inputs: Mapping[str, str] | None = None,
    force: bool = False,
) -> Path:
    """Build a stage output once: reuse a complete folder with the same key, else build it atomically.

    ``build`` fills the temporary folder and may return extra manifest fields
    (row counts, metrics); timings and the key are recorded here.
    """
    folder = Path(folder)
    if not force and is_complete(folder, key):
        return folder
    started = time.time()
    with atomic_dir(folder) as tmp:
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
    return folder
