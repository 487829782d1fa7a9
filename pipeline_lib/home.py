"""Where alignflow keeps its state: models, runs, the MLflow store, Prefect's home.

Everything lives under ``$ALIGNFLOW_HOME``, which defaults to the user's cache
folder, so that a clean machine needs no setup and a test can point the whole
tool at a temporary folder with one variable.
"""

import os
from pathlib import Path


def alignflow_home() -> Path:
    explicit = os.environ.get("ALIGNFLOW_HOME")
    if explicit:
        home = Path(explicit).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        home = Path(cache) / "alignflow"
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def models_dir() -> Path:
    return _sub("models")


def runs_dir() -> Path:
    return _sub("runs")


def prefect_home() -> Path:
    return _sub("prefect")


def mlflow_dir() -> Path:
    return _sub("mlflow")


def _sub(name: str) -> Path:
    path = alignflow_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path

def vllm_dir() -> Path:
    return _sub("vllm")
