"""Running a run's independent work at once, through a Prefect task runner: processes here, or a Ray cluster.

The recipe's ``orchestration`` section (``pipeline_lib.core.orchestration``)
picks the runner; unset, callers keep running their work one after another in
this process, as they always did. ``run_dependent`` runs labelled jobs (the
contestants of compare-methods) as Prefect tasks, each once everything it
needs has finished, as many at once as the runner allows, and returns their
results by label; callers put them back in their own order, so a report is the
same whichever finished first.

On Ray, the cluster is either started for the run (``ray.address: null``:
``ray.init`` on this machine with ``ray.num_cpus``, stopped when the block
ends, its processes with it) or the one at ``ray.address``, which must answer
within ``ray.timeout_s``. A Ray worker is another process, perhaps on another
machine: it gets this process's alignflow home, Prefect API and settings,
MLflow tracking URI and the repository on ``PYTHONPATH`` through the job's
``runtime_env``, so its task runs, stage outputs and MLflow runs land where
this run's do. The stage store is shared by path: a multi-node cluster needs
ALIGNFLOW_HOME on a filesystem every node mounts at the same path
(docs/scaling.md).
"""

from __future__ import annotations

import contextvars
import os
import queue
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect import Task
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipeline_lib.core.environment import environment
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import alignflow_home
from pipeline_lib.core.orchestration import OrchestrationConfig, RayOptions

REPO = Path(__file__).resolve().parents[1]
# Environment a Ray worker inherits from the driver by prefix, besides what is computed below.
FORWARDED_PREFIXES = ("ALIGNFLOW_", "PREFECT_", "MLFLOW_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "THP_")
# The local Ray started for a run: a small object store (results are folder paths, not tensors), no dashboard.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
RAY_NAMESPACE = "alignflow"
GCS_PORT = 6379
CLIENT_SCHEME = "ray://"


@dataclass
class Cluster:
    """The runner a block runs its jobs on, and where it came from (recorded in the run's result)."""

    runner: TaskRunner
    kind: str  # "local" or "ray"
    address: str | None = None  # the Ray cluster's address (the local one's when started here)
    started_here: bool = False
    processes: list[int] = field(default_factory=list)  # PIDs of the Ray processes this run started
    gpus: float = 0.0  # GPUs the cluster has; a job asks for GPUs only when it has some
    in_process: bool = False  # jobs run in threads of this process, so they may share its objects

    def describe(self) -> dict[str, Any]:
        return {"task_runner": self.kind, "address": self.address, "started_here": self.started_here,
                "ray_processes": self.processes, "gpus": self.gpus}  # fmt: skip


def parallel(config: OrchestrationConfig | None) -> bool:
    """Whether a run with this section runs independent work at once (unset: no, as always)."""
    return config is not None


@contextmanager
def cluster(config: OrchestrationConfig, threads: bool = False) -> Iterator[Cluster]:
    """The task runner ``config`` names, started for the block and stopped after it (a local Ray with it).

    ``threads``: local work runs in threads of this process (jobs that hold no model in the process).
    """
    if config.task_runner == "local" and threads:
        with ThreadPoolTaskRunner(max_workers=config.max_workers) as runner:
            yield Cluster(runner, "local", in_process=True)
        return
    if config.task_runner == "local":
        # Processes, not threads: model loading (transformers' meta-device init) and torch's global RNG,
        # which every Trainer seeds, are per process; two trainings in one process would mix them.
        with environment(worker_environment()), ProcessPool(max_workers=config.max_workers) as runner:
            yield Cluster(runner, "local")
        return
    from prefect_ray import RayTaskRunner

    with ray_session(config.ray) as found:
        # Ray is initialised already, so the runner uses this session and leaves stopping it to us.
        with RayTaskRunner(address=found.address) as runner:
            found.runner = runner
            yield found


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Cluster]:
    """``ray.init`` for this run (a new local cluster, or the one at ``options.address``), ``ray.shutdown`` after."""
    import ray

    if ray.is_initialized():
        raise UserError("orchestration.task_runner: ray: Ray is already initialised in this process; run one alignflow run per process")
    if options.address not in (None, "auto", "local"):
        check_answers(options.address, options.timeout_s)
    runtime_env = {"env_vars": worker_environment()}
    started_here = options.address is None
    if started_here:
        context = ray.init(
            num_cpus=options.num_cpus, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            namespace=RAY_NAMESPACE, runtime_env=runtime_env, log_to_driver=True,
        )  # fmt: skip
    else:
        try:
            context = ray.init(address=options.address, namespace=RAY_NAMESPACE, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, TimeoutError) as err:
            raise UserError(
                f"orchestration.ray.address {options.address!r}: no Ray cluster there ({str(err).splitlines()[0]})"
            ) from None
    try:
        address = getattr(context, "address_info", {}).get("gcs_address") or options.address
        processes = _local_ray_processes() if started_here else []
        found = Cluster(None, "ray", address, started_here, processes, float(ray.cluster_resources().get("GPU", 0)))  # type: ignore[arg-type]
        print(
            f"orchestration: Ray {'started for this run' if started_here else 'cluster'} at {address}: "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {found.gpus:g} GPUs, {len(ray.nodes())} node(s)",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        yield found
    finally:
        # Stops the raylet, GCS and workers of a cluster started here; disconnects from any other.
        ray.shutdown()


def check_answers(address: str, timeout_s: float) -> None:
    """Fail in one line, within ``timeout_s``, when nothing listens at a Ray address (``ray.init`` would hang)."""
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=min(left, 5.0)):
                return
        except OSError as err:
            last = err
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    reason = f": {last.strerror or last}" if last else ""
    raise UserError(
        f"orchestration.ray.address {address!r} does not answer (no connection to {host}:{port} within "
        f"{timeout_s:g} s{reason}); start the cluster (`ray start --head`), fix the address, or leave it null for a local Ray"
    )


def _host_port(address: str) -> tuple[str, int]:
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"orchestration.ray.address {address!r}: not host:port or ray://host:port") from None
    if not parts.hostname:
        raise UserError(f"orchestration.ray.address {address!r}: not host:port or ray://host:port")
    return parts.hostname, port or (10001 if address.startswith(CLIENT_SCHEME) else GCS_PORT)


def _local_ray_processes() -> list[int]:
    """PIDs of the processes ``ray.init`` started here (GCS server, raylet, agents), for the run's record."""
    try:
        from ray._private import worker

        node = worker._global_node
        pids = {info.process.pid for infos in node.all_processes.values() for info in infos if info.process}
    except Exception:  # a private API: the record is a nicety, never a reason to fail the run
        return []
    return sorted(pids | _descendants(pids))  # the raylet's agents (dashboard agent, runtime-env agent)


def _descendants(pids: set[int]) -> set[int]:
    """Every process below ``pids`` (Linux: /proc), so a check after the run can find leftovers by PID."""
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found, frontier = set(), set(pids)
    while frontier:
        below = set().union(*(children.get(pid, set()) for pid in frontier)) - found
        found |= below
        frontier = below
    return found


class ProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool, whose thread that forwards its workers' events and logs to the API runs in
    the context that opened the pool. Prefect starts that thread in an empty context, where the settings
    are those of Prefect's import, with no API URL in them when the API is `alignflow`'s own: the thread
    then started Prefect's ephemeral server and sent the contestants' task-run events there, where no UI
    showed them (and the server outlives a SIGKILL)."""

    def __enter__(self) -> ProcessPool:
        self._opened_in = contextvars.copy_context()
        return super().__enter__()

    def _forward_subprocess_messages(self) -> None:
        self._opened_in.run(super()._forward_subprocess_messages)


def worker_environment() -> dict[str, str]:
    """What a worker process (Ray's, or the local pool's) needs to run our stages as this process would: home, Prefect, MLflow, imports."""
    import mlflow
    from prefect.settings import PREFECT_API_URL, get_current_settings

    api = PREFECT_API_URL.value()
    if not api:
        raise UserError(
            "orchestration.task_runner needs a Prefect API server its workers can reach: run it with "
            "`alignflow run` / `alignflow compare-methods` (which start one) or export PREFECT_API_URL"
        )
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_PREFIXES)}
    env |= get_current_settings().to_environment_variables(exclude_unset=True)
    env |= {
        "ALIGNFLOW_HOME": str(alignflow_home()),
        "PREFECT_API_URL": api,
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    return {name: str(value) for name, value in env.items() if value is not None}


def remote_options(found: Cluster, needs: Mapping[str, float]) -> dict[str, float]:
    """Ray's options for a job that needs ``needs``: GPUs only where the cluster has them (else it never
    schedules), never more than it has. Local runners take none."""
    if found.kind != "ray":
        return {}
    options = {name: amount for name, amount in needs.items() if name != "num_gpus"}
    if found.gpus and needs.get("num_gpus"):
        options["num_gpus"] = min(float(needs["num_gpus"]), found.gpus)
    return options


def run_dependent(
    found: Cluster,
    labels: list[str],
    needs: Mapping[str, set[str]],
    job: Callable[[str, dict[str, Any]], tuple[Task, dict[str, Any]]],
    resources: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Run every label's job once the labels it ``needs`` have finished; as many at once as the runner takes.

    ``job(label, results so far)`` returns the Prefect task and its parameters;
    it is called in this process, in ``labels`` order among the ready ones.
    The first failure is raised once it is seen (jobs still running are left
    to the runner's shutdown). Returns results by label.
    """
    from prefect_ray.context import remote_options as ray_options

    options = remote_options(found, resources or {})
    results: dict[str, Any] = {}
    pending, running = list(labels), {}
    finished: queue.Queue[str] = queue.Queue()
    while pending or running:
        for label in [label for label in pending if needs.get(label, set()) <= results.keys()]:
            pending.remove(label)
            task, parameters = job(label, results)
            with ray_options(**options) if options else nullcontext():
                future = found.runner.submit(task, parameters)
            running[label] = future
            future.add_done_callback(lambda _, label=label: finished.put(label))
        if not running:
            raise UserError(f"jobs {pending} wait on each other or on a job that is not there: {dict(needs)}")
        label = finished.get()
        results[label] = running.pop(label).result()
    return results


def where_am_i() -> dict[str, Any]:
    """Where a job runs: the host, process and thread, and the Ray node and worker when under Ray."""
    import threading

    place: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "thread": threading.current_thread().name}
    try:
        import ray

        if ray.is_initialized():
            context = ray.get_runtime_context()
            if context.worker.mode == 1:  # WORKER_MODE: inside a Ray task
                place |= {"ray_node": context.get_node_id(), "ray_worker": context.get_worker_id()}
    except ImportError:
        pass
    return place
