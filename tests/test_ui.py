"""`alignflow ui`: both servers healthy on loopback, both gone after ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_ui_serves_both_on_loopback_and_stops_them(tmp_path):
    prefect_port, mlflow_port = _free_port(), _free_port()
    script = Path(sys.executable).with_name("alignflow")
    log = open(tmp_path / "ui.log", "w")
    ui = subprocess.Popen(
        [str(script), "ui", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )
    try:
        deadline = time.monotonic() + 180
        while "ctrl-C stops both" not in (tmp_path / "ui.log").read_text():
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "UIs did not come up"
            time.sleep(1)
        assert _healthy(f"http://127.0.0.1:{prefect_port}/api/health")
        assert _healthy(f"http://127.0.0.1:{mlflow_port}/health")
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
    finally:
        # On a failed assertion, the clean way down still stops the servers by PID.
        if ui.poll() is None:
            ui.send_signal(signal.SIGINT)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ui.kill()
        log.close()
