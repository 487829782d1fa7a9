"""The test session's isolation (conftest.py): under pytest-xdist, every worker has its own home."""

import os
from pathlib import Path

from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH

from pipeline_lib.tracking import default_tracking_uri


def test_prefect_and_mlflow_live_in_this_sessions_own_home(alignflow_home):
    assert Path(os.environ["ALIGNFLOW_HOME"]) == alignflow_home
    for setting in (PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH):
        assert Path(setting.value()).resolve().is_relative_to(alignflow_home.resolve()), setting.name
    assert default_tracking_uri() == f"sqlite:///{alignflow_home.resolve() / 'mlflow' / 'mlflow.db'}"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # made by this worker's own import of conftest, not inherited from the controller or another worker
        assert alignflow_home.name.startswith(f"alignflow-test-home-{worker}-")
        assert os.environ["OMP_NUM_THREADS"] == "1"
