"""A private Prefect API for one `alignflow` process, tied to its life.

Prefect's own ephemeral server is a child process that outlives a parent
killed with SIGKILL (an OOM kill, `kill -9`, a CI timeout), leaving a server
behind. This one is started the same way but asks the kernel to stop it when
its parent dies, and is stopped by PID on every normal exit. When a server is
already configured (PREFECT_API_URL, e.g. the one `alignflow ui` starts), it
is used instead and left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

from pipeline_lib.core.servers import HOST, free_port, spawn_tied, stop_group, wait_healthy
from pipeline_lib.core.home import prefect_home

API_START_ATTEMPTS = 3
# Where `alignflow ui` (or `make ui`) serves the Prefect UI by default.
UI_URL = f"http://{HOST}:4200"


def _log_file():
    return prefect_home() / "local-api.log"


def _start(timeout: float) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
    }
    for _ in range(API_START_ATTEMPTS):
        port = free_port()
        url = f"http://{HOST}:{port}/api"
        command = [
            sys.executable, "-m", "uvicorn",
            "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", HOST, "--port", str(port), "--log-level", "error", "--lifespan", "on",
        ]
        with open(_log_file(), "a") as log:
            # Its own session: a terminal's ctrl-C reaches the flow, which then
            # still has a live API to record the cancelled run in.
            server = spawn_tied(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if wait_healthy(f"{url}/health", server, timeout):
                return server, url
        except BaseException:
            stop_group(server)
            raise
    raise RuntimeError(f"the local Prefect API did not start after {API_START_ATTEMPTS} attempts; see {_log_file()}")


@contextmanager
def local_prefect_api(timeout: float = 120.0) -> Iterator[bool]:
    """Use the configured Prefect server, or a private one for this block; yield whether it is private."""
    if PREFECT_API_URL.value():
        yield False
        return
    server, url = _start(timeout)
    try:
        # Its runs are kept in Prefect's home, which the server `alignflow ui` starts shows.
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: UI_URL}):
            try:
                yield True
            finally:
                # Logs and events still queued would otherwise be sent to a stopped server.
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        stop_group(server)

