"""Open a data source — a hub id, a local file or a folder of files — as ``datasets`` tables.

Local files go through ``datasets.load_dataset`` too (the ``json``, ``csv`` and
``parquet`` builders), so hub and local data share one reader and one type
inference. Its cache lives under ``alignflow_home()/datasets-cache``, never in
the user's global Hugging Face cache. Local files need no network, so they load
with ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set.

A file that cannot be read is a ``UserError`` naming it, with one exception: a
JSON Lines file with some bad lines loads its good ones, and the bad ones are
reported as skipped rows (see ``json_lines``).
"""

import lzma
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetsError
from datasets.load import CachedDatasetModuleFactory

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import alignflow_home
from pipeline_lib.core.hub import is_hub_id
from pipeline_lib.data.json_lines import read_json_lines
from pipeline_lib.data.quiet import quiet_datasets

_BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}
_JSON_LINES = (".jsonl", ".ndjson")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# What a damaged or cut-off compressed file raises while it is decompressed.
_DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
_READ_ERRORS = (DatasetsError, pa.ArrowException, ValueError, *_DECOMPRESSION_ERRORS)


@dataclass(frozen=True)
class SourcePart:
    """One table of a source: ``label`` is its file path, or ``org/name:split``.

    ``unreadable`` maps the numbers of the rows that could not be parsed to why;
    ``table`` holds all the other rows, in order.
    """

    label: str
    table: datasets.Dataset
    unreadable: Mapping[int, str] = field(default_factory=dict)

    def rows(self) -> Iterator[tuple[int, Mapping[str, Any] | None]]:
        """Every row with its number in the source; None in place of an unreadable one."""
        table_rows = iter(self.table)
        for number in range(len(self.table) + len(self.unreadable)):
            yield number, None if number in self.unreadable else next(table_rows)


def open_source(source: str, split: str, name: str | None = None, revision: str | None = None) -> Iterator[SourcePart]:
    """The source's tables, one per file (sorted) for a folder; loaded lazily.

    ``split``, ``name`` and ``revision`` pick the split, configuration and git
    revision of a hub dataset; a local file or folder is a single split, so
    they are ignored there.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise UserError(f"folder {path} holds no data files ({', '.join(_BUILDERS)}, optionally .gz)")
        for file in files:
            yield _load_file(file)
    elif path.is_file():
        yield _load_file(path)
    elif _names_hub_dataset(source, path):
        yield SourcePart(f"{source}:{split}", load_hub(source, split, name, revision))
    else:
        raise UserError(f"data source '{source}' is neither an existing file or folder nor a hub id (org/name)")


def check_source(source: str) -> None:
    """Fail on a source that cannot load, without reading it: a missing path, or a hub id offline mode cannot load.

    Only what is cheap is checked; whether a file parses, or a hub id downloads, shows when it is loaded.
    """
    path = Path(source).expanduser()
    if path.exists():
        return
    if not _names_hub_dataset(source, path):
        raise UserError(f"{path.resolve()} does not exist")
    if datasets.config.HF_HUB_OFFLINE and not _cached_hub_dataset(source):
        raise UserError(
            f"hub dataset '{source}' is not in the local cache and offline mode is on (HF_HUB_OFFLINE); "
            "download it once online, or give a local file or folder instead"
        )


def _names_hub_dataset(source: str, path: Path) -> bool:
    # org/file.jsonl fits the hub id pattern too; a data file's suffix makes it a path.
    return is_hub_id(source) and _builder(path) is None


def _cached_hub_dataset(hub_id: str) -> bool:
    """Whether load_dataset finds ``hub_id`` offline: only a copy it prepared earlier in our cache folder."""
    try:
        with quiet_datasets():
            CachedDatasetModuleFactory(hub_id, cache_dir=_cache_dir()).get_module()
    except FileNotFoundError:
        return False
    return True


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
    suffixes = _data_suffixes(path)
    return _BUILDERS.get(suffixes[-1]) if suffixes else None


def _data_suffixes(path: Path) -> list[str]:
    """The file's suffixes without a compression suffix: ``a.jsonl.gz`` gives ``.jsonl``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return suffixes


def _load_file(path: Path) -> SourcePart:
    builder = _builder(path)
    if builder is None:
        raise UserError(f"cannot read {path}: unknown file type (expected {', '.join(_BUILDERS)}, optionally .gz)")
    try:
        try:
            with quiet_datasets():
                table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=_cache_dir())
            return SourcePart(str(path), table)
        except _READ_ERRORS as error:
            if _data_suffixes(path)[-1] not in _JSON_LINES or _damaged(path, error):
                raise
        # datasets fails a whole JSON Lines file over one bad line; line by line, only that line is lost.
        table, unreadable = read_json_lines(path)
        return SourcePart(str(path), table, unreadable)
    except StopIteration:
        # What datasets raises for a file without a single record.
        raise UserError(f"{path} holds no rows") from None
    except _READ_ERRORS as error:
        raise UserError(f"cannot read {path} as {builder}: {_problem(path, error)}") from error


def _problem(path: Path, error: BaseException) -> str:
    """What went wrong, in one line."""
    cause = _cause(error)
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"damaged or truncated {path.suffix} file ({text})" if _damaged(path, error) else text


def _damaged(path: Path, error: BaseException) -> bool:
    """Whether ``error`` says the compressed file itself is broken, so no reader can get rows out of it."""
    cause = _cause(error)
    # An OSError with an errno (permission denied, disk full) is the system's problem, not the file's.
    return (
        path.suffix.lower() in _COMPRESSIONS
        and isinstance(cause, _DECOMPRESSION_ERRORS)
        and getattr(cause, "errno", None) is None
    )


def _cause(error: BaseException) -> BaseException:
    # DatasetGenerationError hides the reader's own error in its cause.
    return error.__cause__ or error


def load_hub(hub_id: str, split: str, name: str | None = None, revision: str | None = None) -> datasets.Dataset:
    """A hub dataset's split; ``_fingerprint`` of the result names its content (what a stage key reads)."""
    try:
        with quiet_datasets():
            return datasets.load_dataset(hub_id, name, split=split, revision=revision, cache_dir=_cache_dir())
    except (OSError, DatasetsError, ValueError) as error:
        # OSError covers no network, offline mode and unknown ids; ValueError an unknown split.
        raise UserError(
            f"cannot load hub dataset '{hub_id}' (split '{split}'): {' '.join(str(error).split())[:300]}; "
            "a local file or folder works offline"
        ) from error


def _cache_dir() -> str:
    return str(alignflow_home() / "datasets-cache")


def source_identities(sources: list) -> tuple[dict[str, str], dict[str, str]]:
    """What names each source's content, for a stage key: (local files or folders by position, hub
    fingerprints by position). A hub dataset is loaded (from its cache when it has been) to get its
    fingerprint, which changes with its revision and files."""
    files, hub = {}, {}
    for index, source in enumerate(sources):
        path = Path(source.source).expanduser()
        if path.exists():
            files[str(index)] = str(path.resolve())
        elif _names_hub_dataset(source.source, path):
            hub[str(index)] = load_hub(source.source, source.split, source.name, source.revision)._fingerprint
        else:
            raise UserError(f"data source '{source.source}' is neither an existing file or folder nor a hub id (org/name)")
    return files, hub
