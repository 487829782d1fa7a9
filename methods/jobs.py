"""Independent jobs of one run as Prefect tasks: a round's evaluations, compare-methods' contestants.

A job is a module-level function ``function(ctx, *args)``. ``run_job`` runs
it in whichever process the task runner picked: this one (a thread, sharing
the run's warm vLLM servers), a local pool's or a Ray worker's. It gets the
run's context as plain values and rebuilds it there, so its stages and MLflow
runs land where the run's do; a worker's own servers end with the job.

``run_cluster`` opens the cluster a method run evaluates its rounds on, for
the whole run: ``at_once`` then runs a round's evaluations (the suite and
each entry of ``eval.benchmarks``) as jobs on it, and one after another
where the recipe has no ``orchestration`` section.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from methods.orchestration import Cluster, cluster, run_dependent, where_am_i
from pipeline_lib import tracking
from pipeline_lib.sampling import stop_all_servers
from pipeline_lib.store import atomic_write_text
from pipeline_lib.store.runs import RunLayout
from tasks.context import RunContext
from tasks.stage import declared_resources

# In the run folder: where a run's jobs ran, and when (the record that they ran at once).
ORCHESTRATION_FILE = "orchestration.json"
_RUN_CLUSTER: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar("alignflow_run_cluster", default=None)


def portable(ctx: RunContext, origin: str = "the run's recipe") -> dict[str, Any]:
    """``ctx`` as plain values, for a job that may run in another process."""
    return {
        "recipe": ctx.recipe.to_dict(), "origin": origin, "root": str(ctx.layout.root), "config_hash": ctx.layout.config_hash,
        "parent": ctx.parent, "forcing": ctx.forcing, "backend": ctx.backend, "driver": os.getpid(),
    }  # fmt: skip


@task(name="job", task_run_name="{label}", cache_policy=NO_CACHE, persist_result=False)
def run_job(label: str, context: RunContext | dict[str, Any], function: Callable[..., Any], args: tuple = ()) -> dict[str, Any]:
    """``function(ctx, *args)`` in this task's process; returns its result and where and when it ran.

    ``context``: the run's own context in a thread of its process, else ``portable(ctx)``.
    """
    started = time.time()
    elsewhere = isinstance(context, dict) and os.getpid() != context["driver"]
    ctx = context if isinstance(context, RunContext) else _rebuilt(context, elsewhere)
    try:
        result = function(ctx, *args)
    finally:
        if elsewhere:
            stop_all_servers()  # servers this worker kept warm end with its job
    return {"result": result, "ran": {**where_am_i(), "started_at": started, "ended_at": time.time()}}


def _rebuilt(context: dict[str, Any], elsewhere: bool) -> RunContext:
    """The run's context from ``portable``: its recipe parsed here, and, in another process than the
    driver's, its MLflow store configured."""
    from methods.recipe import validate_recipe

    config = validate_recipe(context["recipe"], origin=context["origin"])
    if elsewhere:
        tracking.configure(config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI"), config.tracking.experiment)
    layout = RunLayout(Path(context["root"]), context["config_hash"])
    return RunContext(config, layout, context["parent"], context["forcing"], context["backend"])


@contextmanager
def run_cluster(ctx: RunContext) -> Iterator[None]:
    """The cluster this method run's rounds evaluate on, for the whole run (none without ``orchestration``).

    Served generation (vLLM) runs the evaluations in threads of this process,
    which share the run's servers; in-process models (the HF backend) need a
    process each, as transformers patches module construction globally while
    it loads one.
    """
    config = ctx.recipe.orchestration
    if config is None:
        yield
        return
    if ctx.forcing.from_stage is not None:
        # "The first stage of that name the run reaches" is only defined when evaluations run in order.
        print("orchestration: --from-stage runs each round's evaluations one after another", file=sys.stderr, flush=True)
        yield
        return
    with cluster(config, threads=ctx.backend == "vllm") as found:
        token = _RUN_CLUSTER.set(found)
        try:
            yield
        finally:
            _RUN_CLUSTER.reset(token)


def at_once(ctx: RunContext, jobs: dict[str, tuple[Callable[..., Any], tuple]], name: str) -> dict[str, Any]:
    """Each labelled ``(function, args)`` job's result: all at once on the run's cluster, else in order.

    On a cluster each job is a Prefect task run named ``<name>/<label>``.
    """
    found = _RUN_CLUSTER.get()
    if found is None or len(jobs) < 2:
        return {label: function(ctx, *args) for label, (function, args) in jobs.items()}
    context = ctx if found.in_process else portable(ctx)

    def job(label: str, _done: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        function, args = jobs[label]
        task = run_job.with_options(name=name.split("/")[0], task_run_name=f"{name}/{label}")
        return task, {"label": label, "context": context, "function": function, "args": args}

    done = run_dependent(found, list(jobs), {}, job, declared_resources())
    _record(ctx, found, name, {label: done[label]["ran"] for label in jobs})
    return {label: done[label]["result"] for label in jobs}


def _record(ctx: RunContext, found: Cluster, name: str, ran: dict[str, Any]) -> None:
    """Where and when each job ran, under ``evaluations.<name>`` in the run folder's orchestration record."""
    path = ctx.layout.root / ORCHESTRATION_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    record = {**record, **found.describe(), "evaluations": {**record.get("evaluations", {}), name: ran}}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))
