"""Training in this process, or in ``train.distributed``'s processes through ``accelerate launch``.

The launcher runs in a process group of its own, tied to this process
(``servers.spawn_tied``): a ctrl-C or an error here stops the group
(``stop_group``), and this process dying (SIGTERM, SIGKILL) makes the kernel
SIGTERM the launcher, whose workers are tied to it in turn (``worker.main``).
A watchdog gives the processes of this machine ``join_timeout_s`` to join
the group; a crash ends in one line quoting the log.

Machine 0 runs the pipeline; each other machine joins with
``python -m pipeline_lib.training.launch CALL --machine-rank K`` (machine 0
prints the command), reading the same files at the same paths.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline_lib.core import interrupts
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.servers import HOST, free_port, spawn_tied, stop_group
from pipeline_lib.store import atomic_write_text
from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.distributed import DEFAULT_PORT, SHARDED, DistributedConfig

POLL_S = 0.5
LOG_LINES = 3  # of a crashed run's log, quoted in its one-line error


@dataclass(frozen=True)
class Call:
    """One training call's arguments, as the launched workers read them (from ``<work_dir>/launch/call.json``)."""

    model: str
    rows: str
    out_dir: str
    config: TrainConfig
    seed: int
    dtype: str
    work_dir: str

    @property
    def launch_dir(self) -> Path:
        return Path(self.work_dir) / "launch"

    @property
    def file(self) -> Path:
        return self.launch_dir / "call.json"

    @property
    def outcome(self) -> Path:
        return self.launch_dir / "outcome.json"

    def joined_marker(self, rank: int) -> Path:
        return self.launch_dir / f"joined-{rank}"

    def write(self) -> None:
        atomic_write_text(self.file, json.dumps({**asdict(self), "config": self.config.model_dump(mode="json")}))

    @classmethod
    def read(cls, path: Path) -> Call:
        fields = json.loads(path.read_text())
        return cls(**{**fields, "config": TrainConfig.model_validate(fields["config"])})


def train(
    model: str | Path, rows: str | Path, out_dir: str | Path, config: TrainConfig, *, seed: int, dtype: str, work_dir: str | Path
) -> dict[str, Any]:
    """``train_model`` on the rows in the file ``rows``, here or in the processes ``config.launched`` asks for."""
    launched = config.launched
    if launched is None:
        from pipeline_lib.training.objectives import train_model  # torch and TRL load only when a model is trained

        return train_model(model, read_rows(rows), out_dir, config, seed=seed, dtype=dtype, work_dir=work_dir)
    if launched.config_file:  # the workers, and other machines, may start elsewhere
        absolute = launched.model_copy(update={"config_file": str(launched.accelerate_config())})
        config = config.model_copy(update={"distributed": absolute})
    call = Call(str(model), str(rows), str(out_dir), config, seed, dtype, str(work_dir))
    shutil.rmtree(call.launch_dir, ignore_errors=True)  # markers and outcome of an interrupted attempt
    call.write()
    outcome = launch(call, launched)
    assert outcome is not None  # a recipe runs on machine 0, which hosts the main process
    return outcome


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows a training stage, or each launched process, trains on."""
    return pq.read_table(path).to_pylist()


def launch_record(config: TrainConfig) -> dict[str, Any]:
    """Where a training ran, for the stage's manifest."""
    launched = config.launched
    if launched is None:
        return {"launcher": "inprocess", "world_size": 1}
    return {"launcher": "accelerate", "world_size": launched.world_size, "strategy": launched.strategy}


def launch(call: Call, dist: DistributedConfig) -> dict[str, Any] | None:
    """Run this machine's share of ``call``'s processes; the outcome on machine 0, None on the others."""
    _check_can_launch(dist)
    ip = dist.main_process_ip or HOST
    port = dist.main_process_port or (free_port() if dist.num_machines == 1 else DEFAULT_PORT)
    log = call.launch_dir / f"machine-{dist.machine_rank}.log"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(dist.accelerate_config()),
        "--num_processes", str(dist.world_size), "--num_machines", str(dist.num_machines),
        "--machine_rank", str(dist.machine_rank), "--main_process_ip", ip, "--main_process_port", str(port),
        # The recipe's model.dtype decides the precision, as in process; a config file's setting would not be keyed.
        "--mixed_precision", "no", "--dynamo_backend", "no",
        # torchrun's static rendezvous gives up with the watchdog (its default: 600 s).
        "--rdzv_conf", f"timeout={math.ceil(dist.join_timeout_s)}",
        "-m", "pipeline_lib.training.worker", str(call.file),
    ]  # fmt: skip
    print(f"training in {_processes(dist.world_size)} ({dist.strategy}); log: {log}", file=sys.stderr, flush=True)
    if dist.num_machines > 1 and dist.machine_rank == 0:
        print(
            f"on each other machine K (1..{dist.num_machines - 1}), within {dist.join_timeout_s:g} s, run: "
            f"{sys.executable} -m pipeline_lib.training.launch {call.file} --machine-rank K",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    with log.open("ab") as output:
        process = spawn_tied(command, stdout=output, stderr=subprocess.STDOUT, env=_environment(dist))
    try:
        _watch(process, call, dist, log, f"{ip}:{port}")
    finally:
        stop_group(process)
    if dist.machine_rank != 0:
        return None
    if not call.outcome.is_file():
        raise UserError(f"training in {_processes(dist.world_size)} ended without an outcome: {_log_tail(log)}; log: {log}")
    return json.loads(call.outcome.read_text())


def _processes(count: int) -> str:
    return f"{count} process{'es' if count != 1 else ''}"


def _environment(dist: DistributedConfig) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in env and not torch_cuda():
        # torchrun gives every process one thread; on CPUs share the cores among the processes instead
        # (SmolLM2 in one launched process: 102 tokens/s on one thread against 188 in process on two).
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // dist.num_processes))
    return env


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_can_launch(dist: DistributedConfig) -> None:
    if dist.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            f"train.distributed.strategy {dist.strategy} needs DeepSpeed, which is not installed (pip install deepspeed)"
        )
    import torch

    gpus = torch_cuda()
    if dist.strategy in SHARDED and not gpus:
        # accelerate forms a CPU group as plain DDP whatever the config file says: it would not shard.
        raise UserError(f"train.distributed.strategy {dist.strategy} needs GPUs; on CPUs use ddp")
    devices, kind = (torch.cuda.device_count(), "GPUs") if gpus else (len(os.sched_getaffinity(0)), "CPU cores")
    if dist.num_processes > devices:
        raise UserError(f"train.distributed.num_processes {dist.num_processes} is more than the {devices} {kind} on this machine")
    if dist.main_process_ip:
        try:
            socket.getaddrinfo(dist.main_process_ip, None)
        except socket.gaierror as error:
            raise UserError(
                f"train.distributed.main_process_ip {dist.main_process_ip!r} does not resolve: {error.strerror}"
            ) from None


def _watch(process: subprocess.Popen, call: Call, dist: DistributedConfig, log: Path, main: str) -> None:
    """Wait for the launcher; stop it if this machine's processes have not all joined in time."""
    deadline = time.monotonic() + dist.join_timeout_s
    ranks = range(dist.machine_rank * dist.num_processes, (dist.machine_rank + 1) * dist.num_processes)
    missing = list(ranks)
    while True:
        interrupts.check()  # a ctrl-C here stops the group (the caller's finally)
        try:
            code = process.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        missing = [rank for rank in missing if not call.joined_marker(rank).exists()]
        if missing and time.monotonic() > deadline:
            others = f"; were the other machines started, and do they reach {main}?" if dist.num_machines > 1 else ""
            raise UserError(
                f"train.distributed: {len(missing)} of this machine's {dist.num_processes} training processes had not joined "
                f"the group of {dist.world_size} after join_timeout_s {dist.join_timeout_s:g} s{others}; log: {log}"
            )
    if code != 0:
        raise UserError(f"training in {_processes(dist.world_size)} failed (exit {code}): {_log_tail(log)}; log: {log}")


# The exception a Python traceback ends with ("ValueError: ..."), as a crashed worker prints it;
# torchrun prefixes each worker's lines with its rank, and ends with its own ChildFailedError.
_EXCEPTION = re.compile(r"^(\w+\.)*\w*(Error|Exception|Interrupt)\b.*:")
_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s*")


def _log_tail(log: Path) -> str:
    """The workers' last exceptions (each once) if they printed any, else the log's last lines, as one line."""
    lines = [_RANK_PREFIX.sub("", line).strip() for line in log.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    exceptions = [line for line in lines if _EXCEPTION.match(line) and "ChildFailedError" not in line]
    return " | ".join(list(dict.fromkeys(exceptions or lines))[-LOG_LINES:]) or "(the log is empty)"


def main(argv: list[str] | None = None) -> int:
    """Join machine 0's training from another machine (machine 0 prints this command)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline_lib.training.launch", description=main.__doc__)
    parser.add_argument("call", type=Path, help="the call.json machine 0 wrote (on a filesystem both machines mount)")
    parser.add_argument("--machine-rank", type=int, required=True)
    args = parser.parse_args(argv)
    call = Call.read(args.call)
    dist = call.config.launched
    if dist is None or not 0 < args.machine_rank < dist.num_machines:
        raise SystemExit(f"--machine-rank must be between 1 and {dist.num_machines - 1 if dist else 0} for {args.call}")
    try:
        launch(call, dist.model_copy(update={"machine_rank": args.machine_rank}))
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
