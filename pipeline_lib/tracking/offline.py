"""Keep MLflow from reaching the network on machines that have none."""

import os
import sys

# setdefault: a user who exports a different value keeps it.
_OFFLINE_ENV = {
    # MLflow 3 sends usage telemetry from a background thread started at import.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # GitPython (used for the run's git tags) must not fail loudly without git.
    "GIT_PYTHON_REFRESH": "quiet",
}


def keep_mlflow_offline() -> None:
    for name, value in _OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    if "mlflow" in sys.modules:
        # mlflow was imported before us, so its telemetry client already exists;
        # re-running its set-up drops the client once telemetry reads as disabled.
        from mlflow.telemetry import get_telemetry_client, set_telemetry_client
        from mlflow.telemetry.utils import is_telemetry_disabled

        if get_telemetry_client() is not None and is_telemetry_disabled():
            set_telemetry_client()
