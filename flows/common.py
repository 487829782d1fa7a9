"""What every pipeline flow does around its stages: resolve the recipe, open the run, track it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect import Flow, flow

from flows import reporting
from pipeline_lib import interrupts, tracking
from pipeline_lib.config import Recipe, load_recipe
from pipeline_lib.runs import RunLayout, open_run
from pipeline_lib.sampling import resolve_backend, stop_all_servers

TAG_RUN_DIR = "alignflow.run_dir"
TAG_SAMPLER_BACKEND = "alignflow.sampler_backend"


@contextmanager
def pipeline_run(recipe_path: str, overrides: list[str] | None) -> Iterator[tuple[Recipe, RunLayout, str]]:
    """Load the recipe, open its run folder and its MLflow parent run (resumed if it exists).

    A rerun of the same recipe logs into the same parent run, so one pipeline
    run stays one MLflow run however many times it was retried.
    """
    recipe = load_recipe(recipe_path, overrides or [])
    backend, why = resolve_backend(recipe.sampler)
    print(f"sampler backend: {backend} ({why})", file=sys.stderr, flush=True)
    layout = open_run(recipe)
    tracking.configure(recipe.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI"), recipe.tracking.experiment)
    previous = tracking.find_run(recipe.tracking.experiment, layout.config_hash)
    tags = {TAG_RUN_DIR: str(layout.root), TAG_SAMPLER_BACKEND: backend, **reporting.prefect_tags()}
    with tracking.start_pipeline_run(
        recipe.tracking.experiment, layout.name, recipe.to_dict(), layout.config_hash, tags=tags, resume_run_id=previous
    ) as parent:
        # A resumed parent keeps its first tags; point it at the flow run doing the work now.
        tracking.set_tags(tags, run_id=parent.info.run_id)
        reporting.link_mlflow_run(parent.info.run_id)
        try:
            yield recipe, layout, parent.info.run_id
        finally:
            # Servers kept warm between stages end with the run, whatever ended it.
            stop_all_servers()


def round_flow(name: str) -> Callable[[Callable], Flow]:
    """A round as a Prefect subflow named ``round-<k>`` (the function takes ``k``).

    The UI then shows each round with its own state and stages. When a failed
    run is retried, Prefect reattaches a round that had completed (its result
    is persisted) instead of running it again, and a round that failed runs
    anew, finding every stage it had finished in the stage cache. Parameters
    are passed as they are: the run's layout and its ``StageForcing`` must be
    the caller's own objects, not validated copies.
    """
    return flow(name=name, flow_run_name="round-{k}", validate_parameters=False, persist_result=True)


def run_result(
    recipe: Recipe, layout: RunLayout, parent_run_id: str, rounds: dict[int, dict[str, float]], final_model: str | None
) -> dict:
    """What a flow returns (and `alignflow run` prints), after leaving its per-round summary in Prefect."""
    # A ctrl-C lost since the last stage (Prefect drops one that lands in a round's teardown) crashes the run here.
    interrupts.check()
    reporting.publish_summary(f"{recipe.method} run {layout.name}", rounds, str(layout.root), parent_run_id)
    result = {"run_dir": str(layout.root), "mlflow_run_id": parent_run_id, "rounds": rounds}
    if final_model:
        result["final_model"] = final_model
    return result
