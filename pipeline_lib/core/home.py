"""Where alignflow keeps its state: models, runs, the MLflow store, Prefect's home.

Everything lives under ``$ALIGNFLOW_HOME``, which defaults to the user's cache
folder, so that a clean machine needs no setup and a test can point the whole
tool at a temporary folder with one variable.
"""

import os
from pathlib import Path

from pipeline_lib.core.errors import UserError


def alignflow_home() -> Path:
    """The home, created if needed; a UserError naming it if it cannot be created or written."""
    home = _created(home_path())
    # An existing read-only folder passes mkdir; find out now, not in the middle of a run.
    if not os.access(home, os.W_OK | os.X_OK):
        raise _unusable("not writable")
    return home


def home_path() -> Path:
    """Where the home is meant to be, whether or not it exists or can be created."""
    explicit = os.environ.get("ALIGNFLOW_HOME")
    if explicit:
        home = Path(explicit).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        home = Path(cache) / "alignflow"
    return home.resolve()


def models_dir() -> Path:
    return _sub("models")


def runs_dir() -> Path:
    return _sub("runs")


def prefect_home(create: bool = True) -> Path:
    return _sub("prefect") if create else home_path() / "prefect"


def mlflow_dir() -> Path:
    return _sub("mlflow")


def _sub(name: str) -> Path:
    return _created(alignflow_home() / name)


def _created(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unusable(f"cannot create {err.filename or path}: {err.strerror}") from None
    return path


def _unusable(reason: str) -> UserError:
    return UserError(
        f"the alignflow home {home_path()} is not a usable folder ({reason}); "
        "set ALIGNFLOW_HOME to a writable folder"
    )


def vllm_dir() -> Path:
    return _sub("vllm")
