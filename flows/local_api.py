"""A private Prefect API for one `alignflow` process, tied to its life.

Prefect's own ephemeral server is a child process that outlives a parent
killed with SIGKILL (an OOM kill, `kill -9`, a CI timeout), leaving a server
behind. This one is started the same way but asks the kernel to stop it when
its parent dies, and is stopped by PID on every normal exit. When a server is
already configured (PREFECT_API_URL, e.g. the one `alignflow ui` starts), it
is used instead and left alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipeline_lib.errors import UserError

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent process dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the normal-exit path below still stops it
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"the local Prefect API exited with code {process.returncode} while starting")
            try:
                if client.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise UserError(f"the local Prefect API at {url} was not healthy after {timeout:.0f} s")


@contextmanager
def local_prefect_api(timeout: float = 120.0) -> Iterator[bool]:
    """Use the configured Prefect server, or a private one for this block; yield whether it is private."""
    if PREFECT_API_URL.value():
        yield False
        return
    port = _free_port()
    url = f"http://{HOST}:{port}/api"
    command = [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(prefect.__module_path__.parent),
        "--factory", "prefect.server.api.server:create_app",
        "--host", HOST, "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    server = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
    try:
        _wait_healthy(url, server, timeout)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield True
            finally:
                # Logs and events still queued would otherwise be sent to a stopped server.
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
