"""Where built-in models live under the models folder, and how a finished build is recognised.

A build appears under its final name only once complete (see ``store.atomic_dir``),
so checking its small manifest is enough: no need to re-hash hundreds of MB.
"""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.core.home import models_dir
from pipeline_lib.store import read_manifest


def alias_folder(alias: str) -> Path:
    return models_dir() / alias


def is_built(folder: Path, alias: str, recipe: int) -> bool:
    """Whether ``folder`` holds a complete build of ``alias`` made by the current recipe version."""
    manifest = read_manifest(folder) or {}
    return (
        manifest.get("model") == alias
        and manifest.get("recipe") == recipe
        and (folder / "config.json").is_file()
    )
