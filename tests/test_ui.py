"""`alignflow ui`: both servers healthy on loopback, both gone after ctrl-C or after `kill -9` of the command."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from pipeline_lib.core.servers import free_port, port_in_use


pytestmark = pytest.mark.integration


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def _running_ui(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """`alignflow ui` on free ports, until both UIs answer; stopped by SIGINT at the end if still running."""
    prefect_port, mlflow_port = free_port(), free_port()
    script = Path(sys.executable).with_name("alignflow")
    log_path = tmp_path / "ui.log"
    with open(log_path, "w") as log:
        ui = subprocess.Popen(
            [str(script), "ui", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        )
        try:
            deadline = time.monotonic() + 180
            while "ctrl-C stops both" not in log_path.read_text():
                assert ui.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "UIs did not come up"
                time.sleep(1)
            assert _healthy(f"http://127.0.0.1:{prefect_port}/api/health")
            assert _healthy(f"http://127.0.0.1:{mlflow_port}/health")
            yield ui, prefect_port, mlflow_port
        finally:
            # On a failed assertion, the clean way down still stops the servers by PID.
            if ui.poll() is None:
                ui.send_signal(signal.SIGINT)
                try:
                    ui.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    ui.kill()


def test_ui_serves_both_on_loopback_and_stops_them(tmp_path):
    with _running_ui(tmp_path) as (ui, prefect_port, mlflow_port):
        listeners = {
            c.laddr.port: c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in (prefect_port, mlflow_port)
        }
        assert listeners == {prefect_port: "127.0.0.1", mlflow_port: "127.0.0.1"}
        children = psutil.Process(ui.pid).children(recursive=True)
        assert children

        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {[p.pid for p in alive]}"


def test_sigkill_takes_both_servers_and_all_their_workers_down(tmp_path):
    """`kill -9` gives no chance to clean up: the kernel must stop the servers, and they their workers."""
    with _running_ui(tmp_path) as (ui, prefect_port, mlflow_port):
        tree = psutil.Process(ui.pid).children(recursive=True)
        groups = {os.getpgid(p.pid) for p in tree}
        assert len(groups) == 2, "each server runs in its own process group"
        ui.kill()
        ui.wait(timeout=30)
        try:
            deadline = time.monotonic() + 60
            while (_living(tree, groups) or _listening(prefect_port, mlflow_port)) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = _living(tree, groups)
            assert not left, f"left running: {[p.pid for p in left]}"
            assert not _listening(prefect_port, mlflow_port)
        finally:
            for process in _living(tree, groups):
                process.kill()


def _living(tree: list[psutil.Process], groups: set[int]) -> list[psutil.Process]:
    """The processes of the servers' trees, including any spawned after ``tree`` was taken (found by group)."""
    candidates = {p.pid: p for p in tree} | {p.pid: p for p in psutil.process_iter() if _group(p.pid) in groups}
    living = []
    for process in candidates.values():
        try:
            # Orphans are reparented to a PID 1 that may never reap them: a zombie has exited.
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _listening(*ports: int) -> list[int]:
    return [port for port in ports if port_in_use(port)]
