"""Open a data source — a hub id, a local file or a folder of files — as ``datasets`` tables.

Local files go through ``datasets.load_dataset`` too (the ``json``, ``csv`` and
``parquet`` builders), so hub and local data share one reader and one type
inference. Its cache lives under ``alignflow_home()/datasets-cache``, never in
the user's global Hugging Face cache. Local files need no network, so they load
with ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetsError

from pipeline_lib.errors import UserError
from pipeline_lib.home import alignflow_home

_BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class SourcePart:
    """One table of a source: ``label`` is its file path, or ``org/name:split``."""

    label: str
    table: datasets.Dataset


def open_source(source: str, split: str) -> Iterator[SourcePart]:
    """The source's tables, one per file (sorted) for a folder; loaded lazily.

    ``split`` picks the split of a hub dataset; a local file or folder is a
    single split, so it is ignored there.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise UserError(f"folder {path} holds no data files ({', '.join(_BUILDERS)}, optionally .gz)")
        for file in files:
            yield SourcePart(str(file), _load_file(file))
    elif path.is_file():
        yield SourcePart(str(path), _load_file(path))
    elif _HUB_ID.fullmatch(source) and _builder(path) is None:
        yield SourcePart(f"{source}:{split}", _load_hub(source, split))
    else:
        raise UserError(f"data source '{source}' is neither an existing file or folder nor a hub id (org/name)")


def data_files(folder: Path) -> list[Path]:
    """Data files anywhere under ``folder``, skipping hidden files and folders."""
    return sorted(
        file
        for file in folder.rglob("*")
        if file.is_file()
        and _builder(file) is not None
        and not any(part.startswith(".") for part in file.relative_to(folder).parts)
    )


def _builder(path: Path) -> str | None:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return _BUILDERS.get(suffixes[-1]) if suffixes else None


def _load_file(path: Path) -> datasets.Dataset:
    builder = _builder(path)
    if builder is None:
        raise UserError(f"cannot read {path}: unknown file type (expected {', '.join(_BUILDERS)}, optionally .gz)")
    try:
        with _quiet():
            return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=_cache_dir())
    except StopIteration:
        # What datasets raises for a file without a single record.
        raise UserError(f"{path} holds no rows") from None
    except (DatasetsError, pa.ArrowException, ValueError) as error:
        # DatasetGenerationError hides the parser's message in its cause.
        raise UserError(f"cannot read {path} as {builder}: {error.__cause__ or error}") from error


def _load_hub(hub_id: str, split: str) -> datasets.Dataset:
    try:
        with _quiet():
            return datasets.load_dataset(hub_id, split=split, cache_dir=_cache_dir())
    except (OSError, DatasetsError, ValueError) as error:
        # OSError covers no network, offline mode and unknown ids; ValueError an unknown split.
        raise UserError(f"cannot load hub dataset '{hub_id}' (split '{split}'): {error}") from error


def _cache_dir() -> str:
    return str(alignflow_home() / "datasets-cache")


@contextmanager
def _quiet() -> Iterator[None]:
    """No per-file progress bars; a load reports one summary line instead."""
    if datasets.is_progress_bar_enabled():
        datasets.disable_progress_bars()
        try:
            yield
        finally:
            datasets.enable_progress_bars()
    else:
        yield
