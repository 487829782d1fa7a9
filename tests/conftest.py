"""Test-wide isolation: the whole session runs under its own ALIGNFLOW_HOME.

It is set when this file is imported, before any test module imports Prefect,
because Prefect reads its settings (derived from the home) once at import.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="alignflow-test-home-"))
os.environ["ALIGNFLOW_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests start their own ephemeral Prefect API and local MLflow store; a
# developer's exported servers must not receive test runs.
for _name in ("PREFECT_API_URL", "PREFECT_PROFILE", "MLFLOW_TRACKING_URI"):
    os.environ.pop(_name, None)

# Before any test module imports Prefect, which reads its settings once.
from tasks.settings import configure_prefect  # noqa: E402

configure_prefect()
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def alignflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _prefect_api_and_clean_home():
    """One private Prefect API for the in-process tests, then remove the session's home.

    Subprocess tests start their own, as a user's command would. The home
    holds a converted 538 MB model that must not pile up in /tmp.
    """
    from flows.local_api import local_prefect_api

    with local_prefect_api():
        yield
    shutil.rmtree(_HOME, ignore_errors=True)
