"""Model folders from the Hugging Face hub, cached under the models folder."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from pipeline_lib.core.home import models_dir

# What a causal LM folder needs; skips duplicate .bin/.onnx/.gguf weights that many repos carry.
_MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


class HubUnavailable(Exception):
    """The hub could not provide the repository (offline, unreachable, missing or gated)."""


def download_from_hub(repo_id: str) -> Path:
    """Snapshot of ``repo_id`` in the local cache, downloading what is missing unless offline."""
    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=models_dir() / "hub",
            allow_patterns=_MODEL_FILES,
            # huggingface_hub reads HF_HUB_OFFLINE once at import; honour a value set later too.
            local_files_only=_offline(),
        )
    except RepositoryNotFoundError:
        raise HubUnavailable("not found on the hub, or gated") from None
    except ValueError:
        raise HubUnavailable("not a valid repository id") from None
    except OSError:
        state = "offline mode is on" if _offline() else "the hub is unreachable"
        raise HubUnavailable(f"{state} and it is not in the local cache") from None
    return Path(folder)


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)
