"""Loopback servers this tool starts as child processes: wait until healthy, stop by PID.

Every server is started in its own process session, so stopping it means
signalling that group: servers that spawn workers (`prefect server start`)
go down whole, and a terminal's ctrl-C never reaches them directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request


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
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
