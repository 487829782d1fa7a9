"""`alignflow ui` / `make ui`: the Prefect and MLflow UIs on loopback, stopped together.

Both servers are children of this process and are stopped by PID on exit or
ctrl-C, and by the kernel if this process is killed outright (SIGKILL), so
nothing is left listening after the command ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_lib.core.servers import HOST, port_in_use, spawn_tied, stop_group, wait_healthy
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import mlflow_dir
from pipeline_lib.tracking import default_tracking_uri



def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    try:
        healthy = wait_healthy(url, process, timeout)
    except TimeoutError as error:
        raise UserError(str(error)) from None
    if not healthy:
        raise UserError(f"server for {url} exited with code {process.returncode} before it was healthy")


def _check_free(port: int) -> None:
    if port_in_use(port):
        raise UserError(f"port {port} on {HOST} is already in use; pick another with --prefect-port/--mlflow-port")


def serve_uis(prefect_port: int = 4200, mlflow_port: int = 5000) -> int:
    for port in (prefect_port, mlflow_port):
        _check_free(port)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    artifacts = (mlflow_dir() / "artifacts").as_uri()
    commands = {
        "prefect": (
            [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port), "--workers", "1"],
            f"http://{HOST}:{prefect_port}/api/health",
            f"http://{HOST}:{prefect_port}",
        ),
        "mlflow": (
            [
                _bin("mlflow"), "server", "--host", HOST, "--port", str(mlflow_port), "--workers", "1",
                "--backend-store-uri", default_tracking_uri(), "--default-artifact-root", artifacts,
            ],
            f"http://{HOST}:{mlflow_port}/health",
            f"http://{HOST}:{mlflow_port}",
        ),
    }
    processes: list[subprocess.Popen] = []
    # ctrl-C and a plain `kill` both end in the finally block below; a shell
    # that started us in the background may have left SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        for name, (command, health, _) in commands.items():
            process = spawn_tied(command, env=env)
            processes.append(process)
            _wait_healthy(health, process)
        print(f"Prefect UI: {commands['prefect'][2]}")
        print(f"MLflow UI:  {commands['mlflow'][2]}")
        print(f"Point runs at this Prefect server with: export PREFECT_API_URL={commands['prefect'][2]}/api")
        print("ctrl-C stops both.")
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:
            stop_group(process)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
