"""What every method's flow does around its stages: open the run and its context, track it, report it."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Flow, flow

from methods.jobs import run_cluster
from methods.recipe import Recipe, load_recipe, validate_recipe
from pipeline_lib import tracking
from pipeline_lib.core import interrupts
from pipeline_lib.reporting.tables import Rounds
from pipeline_lib.sampling import resolve_backend, stop_all_servers
from pipeline_lib.store.runs import StageForcing, open_run
from pipeline_lib.tracking import lineage
from pipeline_lib.tracking.runs import TAG_RUN_DIR
from tasks import reporting
from tasks.context import RunContext
from tasks.evaluation import log_benchmarks_by_round, register_model
from tasks.stage import DECLARED

TAG_SAMPLER_BACKEND = "alignflow.sampler_backend"
# A method's body: the run's context in, (final model or None, metrics per round) out.
Body = Callable[[RunContext], tuple[str | None, Rounds]]


def parsed_recipe(recipe: str | dict | Any, overrides: list[str] | None = None) -> Any:
    """The recipe a flow was given: already parsed (``alignflow run`` parses it once, before Prefect
    starts), a path with overrides (a deployment), or the parsed recipe as Prefect stored it (a retry)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return validate_recipe(recipe, origin="the flow run's recipe")
    return load_recipe(recipe, overrides or [])


@contextmanager
def pipeline_run(recipe: Any, from_stage: str | None = None) -> Iterator[RunContext]:
    """Open the run folder and its MLflow parent run (resumed if it exists), and the run's context.

    A rerun of the same recipe logs into the same parent run, so one pipeline
    run stays one MLflow run however many times it was retried.
    """
    backend, why = resolve_backend(recipe.sampler)
    print(f"sampler backend: {backend} ({why})", file=sys.stderr, flush=True)
    layout = open_run(recipe)
    tracking.configure(recipe.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI"), recipe.tracking.experiment)
    previous = tracking.find_run(recipe.tracking.experiment, layout.config_hash)
    source = lineage.source_tags(recipe.name, recipe.method, recipe.tracking.log_model_weights, _deployment_command())
    tags = {TAG_RUN_DIR: str(layout.root), TAG_SAMPLER_BACKEND: backend, **reporting.prefect_tags(), **source}
    with tracking.start_pipeline_run(
        recipe.tracking.experiment, layout.name, recipe.to_dict(), layout.config_hash, tags=tags, resume_run_id=previous
    ) as parent:
        # A resumed parent keeps its first tags; point it at the flow run (and command) doing the work now.
        tracking.set_tags(tags, run_id=parent.info.run_id)
        reporting.link_mlflow_run(parent.info.run_id)
        forcing = StageForcing(sorted(DECLARED), from_stage)
        try:
            yield RunContext(recipe, layout, parent.info.run_id, forcing, backend)
        finally:
            # Servers kept warm between stages end with the run, whatever ended it.
            stop_all_servers()
        forcing.check_reached()


def method_flow(name: str, body: Body) -> Flow:
    """The Prefect flow of a method: open the run, run ``body``, report where to look.

    Parameters are taken as given (``validate_parameters=False``): ``alignflow
    run`` hands over the recipe it already parsed.
    """

    def run(recipe: Any, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
        config = parsed_recipe(recipe, overrides)
        if config.method != name:
            raise ValueError(f"the {name} flow got a {config.method} recipe")
        with pipeline_run(config, from_stage) as ctx, run_cluster(ctx):
            final_model, rounds = body(ctx)
            if config.eval.benchmarks:
                log_benchmarks_by_round(ctx.parent, rounds)
            registered = register_model(ctx.parent, final_model, config.name) if final_model else None
            return run_result(ctx, rounds, final_model, registered)

    # Named as the attribute it is bound to in the method's flow module (where ``body`` is), so a
    # deployment's entrypoint (methods/dpo/flow.py:dpo_flow) loads it; the registry names it so too.
    run.__module__ = body.__module__
    run.__name__ = run.__qualname__ = f"{name}_flow"
    return flow(name=name, validate_parameters=False)(run)


def round_flow(name: str) -> Callable[[Callable], Flow]:
    """A round as a Prefect subflow named ``round-<k>`` (the function takes ``k`` after the context).

    The UI then shows each round with its own state and stages. When a failed
    run is retried, Prefect reattaches a round that had completed (its result
    is persisted) instead of running it again, and a round that failed runs
    anew, finding every stage it had finished in the stage cache. Parameters
    are passed as they are: the run's context and its ``StageForcing`` must be
    the caller's own objects, not validated copies.
    """
    return flow(name=name, flow_run_name="round-{k}", validate_parameters=False, persist_result=True)


def _deployment_command() -> str | None:
    """How a served deployment's run was started: Prefect, not a command line, runs it (None: not one)."""
    from prefect.runtime import deployment, flow_run

    if deployment.id is None:
        return None
    return shlex.join(["prefect", "deployment", "run", f"{flow_run.flow_name}/{deployment.name}"])


def run_result(ctx: RunContext, rounds: Rounds, final_model: str | None, registered: str | None = None) -> dict:
    """What a flow returns (and `alignflow run` prints), after leaving its per-round summary in Prefect."""
    # A ctrl-C lost since the last stage (Prefect drops one that lands in a round's teardown) crashes the run here.
    interrupts.check()
    layout = ctx.layout
    reporting.publish_summary(f"{ctx.recipe.method} run {layout.name}", rounds, str(layout.root), ctx.parent)
    result = {"run_dir": str(layout.root), "mlflow_run_id": ctx.parent, "rounds": rounds}
    if final_model:
        result["final_model"] = final_model
    if registered:
        result["registered_model"] = registered
    return result
