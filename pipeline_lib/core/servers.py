"""Loopback servers this tool starts as child processes: free port, tie to our life, wait until healthy, stop by PID.

Every server is started in its own process session, so stopping it means
signalling that group: servers that spawn workers (`prefect server start`,
vLLM's engine core) go down whole, and a terminal's ctrl-C never reaches
them directly; the parent decides when they stop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
try:
    # Resolved here, not in the forked child, where loading a library is unsafe.
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the normal-exit paths still stop the server
    _prctl = None


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (callers retry if someone takes it first)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` dies (SIGKILL included), or exits if it already has."""

    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return setup


# Linux delivers the parent-death signal when the *thread* that forked the
# child exits, not the process. Servers kept across stages would die with the
# stage's worker thread, so they are forked from this one long-lived thread.
_launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-launcher")


def spawn_tied(command: list[str], **popen_options) -> subprocess.Popen:
    """Start ``command`` in its own session, SIGTERMed by the kernel when this process dies."""
    parent = os.getpid()
    return _launcher.submit(
        subprocess.Popen, command, start_new_session=True, preexec_fn=die_with_parent(parent), **popen_options
    ).result()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> bool:
    """Poll ``url`` until it answers 200; False if the process exited first, TimeoutError if too slow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not healthy after {timeout:.0f} s")


def stop_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited after ``grace`` seconds."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # Workers that outlived their leader (an engine process orphaned by a crash) still hold the group.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
