"""Content digests of files, folders and source code, and the manifest that records a folder's digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline_lib.core.home import alignflow_home
from pipeline_lib.store.files import atomic_write_text

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def digest_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def digest_path(path: str | Path) -> str:
    """Content digest of a file or folder.

    A folder with a manifest is known by the digest recorded there; any other
    folder (a local model, say) is hashed once and then remembered for as long
    as its files keep their sizes and modification times.
    """
    path = Path(path).resolve()
    if path.is_file():
        return digest_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot digest {path}: no such file or folder")
    recorded = (read_manifest(path) or {}).get("digest")
    return recorded or remembered_digest(path)


def remembered_digest(folder: Path) -> str:
    """``digest_tree(folder)``, computed once per state of the folder's files."""
    # The inode and ctime change with any rewrite, even one that keeps the size
    # and restores the mtime (cp -p, rsync -a).
    stats = [
        (file.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        for file in sorted(p for p in folder.rglob("*") if p.is_file())
        for st in [file.stat()]
    ]
    fingerprint = hashlib.sha256(json.dumps([str(folder), stats]).encode()).hexdigest()
    memo = alignflow_home() / "digests" / fingerprint
    if memo.is_file():
        return memo.read_text().strip()
    digest = digest_tree(folder)
    atomic_write_text(memo, digest)
    return digest


def source_digest(*modules: ModuleType) -> str:
    """Digest of the Python source of modules (a package: all its .py files).

    Part of the key of stages that are cheap to recompute and whose output is
    a pure function of code, such as generating and grading the suite, so that
    changed code never reuses outputs made by the old code.
    """
    sha = hashlib.sha256()
    for module in modules:
        origin = Path(module.__file__)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for source in files:
            sha.update(source.name.encode() + b"\0" + source.read_bytes())
    return sha.hexdigest()


def digest_tree(folder: Path) -> str:
    """Digest of every file under a folder except the manifest, by relative path and content."""
    sha = hashlib.sha256()
    for file in content_files(folder):
        sha.update(file.relative_to(folder).as_posix().encode() + b"\0")
        sha.update(digest_file(file).encode())
    return sha.hexdigest()


def content_files(folder: Path) -> list[Path]:
    """Every file of a stage output but its manifest, in a fixed order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
