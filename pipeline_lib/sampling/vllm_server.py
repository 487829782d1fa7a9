"""A vLLM OpenAI-compatible server for one model, on loopback, tied to this process's life.

vLLM runs from its own virtualenv (see ``environment``), so it is always a
separate process. The server is started in its own session with the
kernel's parent-death signal set, so a pipeline killed with SIGKILL takes it
down too; each server also leaves a record under ``$ALIGNFLOW_HOME/vllm``
naming its owner, and the next start reaps servers whose owner is gone, in
case the kernel's signal could not be delivered (the owner was not the
direct parent, or the platform has no such signal).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import vllm_dir
from pipeline_lib.core.servers import HOST, free_port, port_in_use, spawn_tied, stop_group, wait_healthy
from pipeline_lib.sampling.environment import require_vllm_python
from pipeline_lib.store import atomic_write_text

SERVED_NAME = "alignflow"
PLUGINS = Path(__file__).with_name("vllm_plugins")
SEEDED_SAMPLING = "alignflow_seeded_sampling:SeededSampling"
SEED_ARG = "alignflow_seed"  # that module's SEED_ARG; it runs in vLLM's environment and cannot import this one
START_ATTEMPTS = 3
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ServerOptions:
    """How to start vLLM; the recipe's ``sampler.vllm`` section."""

    dtype: str = "float32"
    seed: int = 0
    port: int | None = None
    startup_timeout_s: float = 300.0
    kv_cache_gib: float = 2.0
    max_model_len: int | None = 4096
    enforce_eager: bool = True
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # A replica's share of the machine (``replica_devices``): its CUDA_VISIBLE_DEVICES on GPU, its
    # VLLM_CPU_OMP_THREADS_BIND cores on CPU; None: all of it. Part of the pool's key, so a warm
    # server is only reused on the devices it was started on.
    devices: str | None = None


class ServerError(RuntimeError):
    """The vLLM server died or never became healthy; the message ends with its log's last lines."""


@dataclass(frozen=True)
class ModelToServe:
    """A merged checkpoint, or a base model with a LoRA adapter on top."""

    base: Path
    adapter: Path | None = None
    adapter_rank: int | None = None

    @classmethod
    def from_folder(cls, folder: Path) -> ModelToServe:
        """A folder holding a PEFT adapter is served on its base model; any other folder as it is."""
        folder = Path(folder)
        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            return cls(base=folder)
        config = json.loads(config_file.read_text())
        base = config.get("base_model_name_or_path")
        if not base or not Path(base).is_dir():
            raise UserError(f"{config_file}: base_model_name_or_path {base!r} is not a local model folder")
        return cls(base=Path(base), adapter=folder, adapter_rank=int(config.get("r", 16)))


class VLLMServer:
    """Start with ``start()``, stop with ``stop()`` (idempotent); ``url`` is the OpenAI API root."""

    def __init__(self, model: ModelToServe, options: ServerOptions) -> None:
        self.python = require_vllm_python("sampler.backend=vllm")
        self.model = model
        self.options = options
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log_file: Path | None = None
        self._restarting = threading.Lock()

    def start(self) -> VLLMServer:
        reap_orphans()
        explicit = self.options.port
        if explicit is not None and port_in_use(explicit):
            raise UserError(f"sampler.vllm.port: port {explicit} on {HOST} is already in use; pick another or leave it unset")
        for _ in range(START_ATTEMPTS):
            port = explicit or free_port()
            if self._try_start(port):
                return self
            # Another process may have taken a free port between our probe and
            # vLLM's bind; only then is a new port worth a try.
            if explicit is not None or not _lost_port_race(self.log_file):
                break
        raise ServerError(f"vLLM server for {self.model.base} did not start{self._log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_group(self.process, grace=20.0)
        _record_file(self.process.pid).unlink(missing_ok=True)
        self.process = None

    def restart(self, seen_url: str) -> None:
        """Start again after the server at ``seen_url`` failed; a no-op when another user of this shared server
        has restarted it since (it answers at a new URL)."""
        with self._restarting:
            if self.url != seen_url and self.is_alive():
                return
            self.stop()
            self.start()

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe_failure(self) -> str:
        """What happened to the server, for error messages: its exit code, or that its engine failed."""
        code = None if self.process is None else self.process.poll()
        state = "is running but its engine failed" if code is None else f"exited with code {code}"
        return f"the vLLM server for {self.model.base} {state}{self._log_tail()}"

    def _try_start(self, port: int) -> bool:
        instance = vllm_dir() / f"server-{port}"
        scratch = instance / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        self.log_file = instance / "server.log"
        self.url = f"http://{HOST}:{port}"
        with open(self.log_file, "w") as log:
            self.process = spawn_tied(
                self._command(port),
                env=self._environment(scratch),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _write_record(self.process.pid, port, self.model.base)
        try:
            healthy = wait_healthy(f"{self.url}/health", self.process, self.options.startup_timeout_s)
        except TimeoutError:
            self.stop()
            raise ServerError(
                f"the vLLM server was not healthy after {self.options.startup_timeout_s:.0f} s "
                f"(sampler.vllm.startup_timeout_s){self._log_tail()}"
            ) from None
        except BaseException:
            self.stop()
            raise
        if not healthy:
            self.stop()
        return healthy

    def _command(self, port: int) -> list[str]:
        o = self.options
        command = [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model.base),
            "--served-model-name", SERVED_NAME,
            "--host", HOST, "--port", str(port),
            "--dtype", o.dtype,
            "--seed", str(o.seed),
            # Sampling must be defined by SamplingParams alone, as in the HF
            # backend: ignore the checkpoint's default temperature or top_k.
            "--generation-config", "vllm",
            "--disable-uvicorn-access-log",
            # Requests that carry their own seed are drawn by it (vllm_plugins/alignflow_seeded_sampling.py).
            "--logits-processors", SEEDED_SAMPLING,
        ]
        if not has_cuda():
            # One CPU worker: run it inside the engine process instead of
            # spawning another interpreter (about 10 s less to start).
            command += ["--distributed-executor-backend", "uni"]
        if o.max_model_len:
            command += ["--max-model-len", str(o.max_model_len)]
        if o.enforce_eager:
            command.append("--enforce-eager")
        gpus = len(o.devices.split(",")) if o.devices and has_cuda() else 1
        if gpus > 1 and not {"--tensor-parallel-size", "-tp"} & set(o.extra_args):
            # A replica given several GPUs spreads its model over them; vLLM would use only the first.
            command += ["--tensor-parallel-size", str(gpus)]
        if self.model.adapter is not None:
            command += [
                "--enable-lora",
                "--max-lora-rank", str(_supported_rank(self.model.adapter_rank or 16)),
                "--lora-modules", f"{SERVED_NAME}-adapter={self.model.adapter}",
            ]
        command += list(o.extra_args)
        if o.devices and not has_cuda() and shutil.which("taskset"):
            # The whole server on its cores, not only the engine's OpenMP threads: its HTTP, tokenizer and
            # torch threads otherwise run on the other replicas' cores, and two one-core replicas on two
            # cores ran 20x slower than one (SmolLM2, bench/scaling.py).
            command = ["taskset", "-c", o.devices, *command]
        return command

    def _environment(self, scratch: Path) -> dict[str, str]:
        env = {
            **os.environ,
            # Caches stay in the home, not in ~, and are shared by the home's servers: vLLM keys what it
            # keeps (a model class's inspection, about 9 CPU-seconds in a subprocess at each start
            # otherwise; compiled kernels) by the source it came from, and writes it atomically.
            # IPC sockets stay in the server's own folder (scratch), not in /tmp.
            "VLLM_CACHE_ROOT": str(vllm_dir() / "cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(vllm_dir() / "inductor"),
            "TMPDIR": str(scratch),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Our own interpreter's venv must not leak into vLLM's.
            "VIRTUAL_ENV": str(self.python.parent.parent),
            # Our own interpreter's packages must not either; only the modules the server loads.
            "PYTHONPATH": str(PLUGINS),
        }
        if not has_cuda():
            # The CPU engine sizes its KV cache from this (GiB), and by default
            # leaves one core idle for the API process; we want all of them.
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.options.kv_cache_gib:g}")
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", _cpu_range())
            # The engine inside the API process: one interpreter fewer to
            # start (about 20 s here) and the same throughput on two cores.
            env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if self.options.devices:
            env["CUDA_VISIBLE_DEVICES" if has_cuda() else "VLLM_CPU_OMP_THREADS_BIND"] = self.options.devices
            if not has_cuda():
                env["OMP_NUM_THREADS"] = str(_cpu_count(self.options.devices))
        return env

    def _log_tail(self) -> str:
        if self.log_file is None or not self.log_file.is_file():
            return ""
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        # vLLM logs a lot; its error lines say more than its last lines.
        errors = [line for line in lines if "Error" in line or "ERROR" in line]
        tail = "\n  ".join(errors[-5:] or lines[-LOG_TAIL_LINES:])
        return f"; log {self.log_file}, last lines:\n  {tail}"


def _lost_port_race(log_file: Path | None) -> bool:
    return log_file is not None and log_file.is_file() and "address already in use" in log_file.read_text().lower()


def _supported_rank(rank: int) -> int:
    """vLLM accepts only some maximum LoRA ranks; the smallest one that holds ``rank``."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise UserError(f"LoRA rank {rank} is larger than vLLM serves (512)")


def _cpus() -> list[int]:
    """The cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _cpu_range(cpus: list[int] | None = None) -> str:
    cpus = cpus or _cpus()
    contiguous = len(cpus) > 1 and cpus == list(range(cpus[0], cpus[-1] + 1))
    return f"{cpus[0]}-{cpus[-1]}" if contiguous else ",".join(map(str, cpus))


def has_cuda() -> bool:
    return Path("/dev/nvidiactl").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


def visible_gpus() -> list[str]:
    """The GPUs a server started from here may use, as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    # One folder per GPU the driver sees; reading it does not initialise CUDA in this process.
    driver = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def _cpu_count(cpus: str) -> int:
    """Cores in a list such as ``0-3,6``."""
    count = 0
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def replica_devices(replicas: int) -> list[str]:
    """Each of ``replicas`` servers' share of this machine: equal slices of the visible GPUs, else of the CPU cores."""
    if has_cuda():
        gpus = visible_gpus()
        if not gpus:
            raise UserError("sampler.replicas: no GPU is visible to share (CUDA_VISIBLE_DEVICES is empty)")
        if replicas > len(gpus) or len(gpus) % replicas:
            raise UserError(
                f"sampler.replicas: {replicas} replicas cannot share {len(gpus)} visible GPU(s) evenly; "
                f"use a divisor of {len(gpus)}"
            )
        each = len(gpus) // replicas
        return [",".join(gpus[i * each : (i + 1) * each]) for i in range(replicas)]
    cpus = _cpus()
    if replicas > len(cpus):
        raise UserError(f"sampler.replicas: {replicas} replicas need a CPU core each, and this process may use {len(cpus)}")
    # Slices differ by at most one core; the first ones get the extra.
    size, extra = divmod(len(cpus), replicas)
    bounds = [i * size + min(i, extra) for i in range(replicas + 1)]
    return [_cpu_range(cpus[bounds[i] : bounds[i + 1]]) for i in range(replicas)]


# Records of running servers, so that a later start can reap one whose owner died.


def _records() -> Path:
    folder = vllm_dir() / "servers"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _record_file(pid: int) -> Path:
    return _records() / f"{pid}.json"


def _write_record(pid: int, port: int, model: Path) -> None:
    record = {"pid": pid, "owner": os.getpid(), "port": port, "model": str(model), "started": time.time()}
    atomic_write_text(_record_file(pid), json.dumps(record))


def reap_orphans() -> list[int]:
    """Kill the process groups of recorded servers whose owner process is gone; return their PIDs."""
    reaped = []
    for record_file in _records().glob("*.json"):
        try:
            record = json.loads(record_file.read_text())
        except (OSError, json.JSONDecodeError):
            record_file.unlink(missing_ok=True)
            continue
        if _alive(record["owner"]):
            continue
        if _alive(record["pid"]) and _is_vllm(record["pid"]):
            try:
                os.killpg(record["pid"], 9)
            except (ProcessLookupError, PermissionError):
                pass
            reaped.append(record["pid"])
        record_file.unlink(missing_ok=True)
    return reaped


def _is_vllm(pid: int) -> bool:
    """Guards against a recycled PID: only a process still running vLLM is killed."""
    try:
        return b"vllm" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent has not collected it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


class ServerPool:
    """Servers kept warm between stages of one pipeline process, so a model sampled twice starts once.

    A SEFT round samples the policy, revises with the reviser, then evaluates
    the new policy, which the next round samples again: with two servers
    kept, four starts serve eight generation stages. Stages that run at once
    (a round's benchmarks, ``orchestration``) share a model's server: vLLM
    batches their requests together, and a second copy of the model would
    only take memory. ``close`` stops the idle ones (a lent server is released
    by its stage's sampler on any exit); the flow calls it on success, failure
    and ctrl-C, and an exit hook calls it too.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[ModelToServe, ServerOptions], VLLMServer] = {}
        self._lent: dict[tuple[ModelToServe, ServerOptions], tuple[VLLMServer, int]] = {}
        self._starting: dict[tuple[ModelToServe, ServerOptions], threading.Lock] = {}
        self._lock = threading.Lock()

    def acquire(self, model: ModelToServe, options: ServerOptions, keep: int) -> tuple[VLLMServer, str]:
        """A server for ``model``, and how it came: "started", "kept warm" or "shared" (in use by another stage)."""
        key = (model, options)
        with self._lock:
            starting = self._starting.setdefault(key, threading.Lock())
        # One start per model at a time: a stage that asks while another starts the model waits to share it.
        with starting:
            with self._lock:
                lent = self._lend(key)
                if lent is not None:
                    return lent
                # Make room first: an idle server's memory is better spent on the one we need.
                while self._idle and len(self._idle) >= max(keep, 1):
                    self._idle.pop(next(iter(self._idle))).stop()
            server = VLLMServer(model, options).start()
            with self._lock:
                self._lent[key] = (server, 1)
            return server, "started"

    def _lend(self, key: tuple[ModelToServe, ServerOptions]) -> tuple[VLLMServer, str] | None:
        server, users = self._lent.get(key, (None, 0))
        how = "shared"
        if server is None:
            server, how = self._idle.pop(key, None), "kept warm"
            if server is not None and not server.is_alive():
                server.stop()
                server = None
        if server is None:
            return None
        self._lent[key] = (server, users + 1)
        return server, how

    def release(self, server: VLLMServer, keep: int) -> None:
        key = (server.model, server.options)
        with self._lock:
            lent, users = self._lent.get(key, (None, 0))
            if lent is server and users > 1:
                self._lent[key] = (server, users - 1)
                return
            if lent is server:
                del self._lent[key]
            if keep >= 1 and server.is_alive():
                self._idle[key] = server
                while len(self._idle) > keep:
                    self._idle.pop(next(iter(self._idle))).stop()
                return
        server.stop()

    def close(self) -> None:
        """Stop the idle servers; a lent one is its users' to release (a stage's sampler does on any exit)."""
        with self._lock:
            servers, self._idle = list(self._idle.values()), {}
        for server in servers:
            server.stop()


POOL = ServerPool()
atexit.register(POOL.close)
