"""What every pipeline flow does around its stages: resolve the recipe, open the run, track it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.runtime import flow_run

from pipeline_lib import tracking
from pipeline_lib.config import Recipe, load_recipe
from pipeline_lib.runs import RunLayout, open_run

TAG_PREFECT_FLOW_RUN = "prefect.flow_run_id"
TAG_RUN_DIR = "alignflow.run_dir"


@contextmanager
def pipeline_run(recipe_path: str, overrides: list[str] | None) -> Iterator[tuple[Recipe, RunLayout, str]]:
    """Load the recipe, open its run folder and its MLflow parent run (resumed if it exists).

    A rerun of the same recipe logs into the same parent run, so one pipeline
    run stays one MLflow run however many times it was retried.
    """
    recipe = load_recipe(recipe_path, overrides or [])
    layout = open_run(recipe)
    tracking.configure(recipe.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI"), recipe.tracking.experiment)
    previous = tracking.find_run(recipe.tracking.experiment, layout.config_hash)
    tags = {TAG_RUN_DIR: str(layout.root), TAG_PREFECT_FLOW_RUN: str(flow_run.id or "")}
    with tracking.start_pipeline_run(
        recipe.tracking.experiment, layout.name, recipe.to_dict(), layout.config_hash, tags=tags, resume_run_id=previous
    ) as parent:
        # A resumed parent keeps its first tags; point it at the flow run doing the work now.
        tracking.set_tags(tags, run_id=parent.info.run_id)
        yield recipe, layout, parent.info.run_id
