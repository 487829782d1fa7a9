"""Local Prefect settings, applied before Prefect is first imported.

Prefect reads most settings once at import, so this module must not import
Prefect itself. Values are defaults only: a user who exports PREFECT_API_URL
(for example to the server `make ui` starts) keeps it.
"""

import os

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import prefect_home


def configure_prefect() -> None:
    try:
        home = prefect_home()
    except UserError:
        # This runs on import, before even `--help` is parsed; each command
        # reports the unusable home itself (flows.cli.main), as one line.
        home = prefect_home(create=False)
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        # No network here: telemetry and update checks only produce errors.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # The ephemeral server can take a while to start on a 2-core machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def cache_key_storage() -> str:
    return str(prefect_home() / "cache-keys")
