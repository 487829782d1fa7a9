"""`alignflow compare-methods`: every method on the same model, prompts and token budget, one leaderboard.

Each variant runs its own method body (the same stages, so anything two
variants share is computed once) inside a child MLflow run of the
comparison, with its rounds below it. The leaderboard goes to the parent run
as metrics, a JSON table and a markdown file. The comparison has one
``--from-stage``: the first stage of that name any contestant reaches is
recomputed, and every stage after it, in that contestant and the ones after.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow

from methods import METHODS
from methods.compare.variants import leaderboard_markdown, leaderboard_row, variant_recipe
from methods.run import parsed_recipe, pipeline_run
from methods.shared import starting_model
from pipeline_lib import tracking
from pipeline_lib.config import save_resolved
from pipeline_lib.reporting import metrics as m
from pipeline_lib.sampling import resolve_backend
from pipeline_lib.store.runs import RunLayout
from pipeline_lib.tracking.lineage import KIND_CONTESTANT, TAG_METHOD
from tasks import reporting
from tasks.context import RunContext
from tasks.evaluation import register_model

TAG_VARIANT = "alignflow.variant"
# The leaderboard columns logged as parent-run metrics, leaderboard/<label>/<column>.
LOGGED = ("score", "score_delta", "score_delta_low", "score_delta_high", "pass_rate", "length", "wall_s")
# Every contestant's stages are the comparison's: --from-stage is checked against them before any runs.
# Loaded through the registry, so this flow imports no other method's flow module by name.
BODIES = {name: method.load_body() for name, method in METHODS.items() if method.contestant}


def run_contestants(ctx: RunContext) -> dict[str, Any]:
    """Each contestant in order, then the leaderboard; returns what ``alignflow compare-methods`` prints."""
    layout, parent = ctx.layout, ctx.parent
    results = {"base": starting_model(ctx)}
    rows, start, registered = [], None, {}
    for variant in ctx.recipe.compare.methods:
        recipe = variant_recipe(ctx.recipe, variant, results)
        root = layout.root / variant.label
        contestant = _contestant(ctx, recipe, RunLayout(root, save_resolved(recipe, root)), variant)
        print(f"compare-methods: {variant.label} ({variant.method})", flush=True)
        results[variant.label], rounds = BODIES[variant.method](contestant)
        # Each contestant's final model under its own name: compare-tiny-sft, compare-tiny-spin...
        registered[variant.label] = register_model(parent, results[variant.label], f"{ctx.recipe.name}-{variant.label}")
        start = start or rounds[0]
        rows.append(leaderboard_row(variant.label, rounds[max(rounds)], root))
    markdown = leaderboard_markdown(rows, start)
    _log_leaderboard(parent, rows, markdown)
    (layout.root / "leaderboard.md").write_text(markdown)
    reporting.publish_leaderboard(f"compare run {layout.name}", markdown, rows, parent)
    return {
        "run_dir": str(layout.root),
        "mlflow_run_id": parent,
        "leaderboard": rows,
        "leaderboard_markdown": markdown,
        "models": results,
        "registered_models": {label: uri for label, uri in registered.items() if uri},
    }


def _contestant(ctx: RunContext, recipe: Any, layout: RunLayout, variant: Any) -> RunContext:
    """The contestant's context: its recipe, folder and MLflow run, the comparison's forcing."""
    contestant = ctx.variant(recipe, layout, _method_run(ctx.parent, variant.label, variant.method))
    if recipe.sampler != ctx.recipe.sampler:
        # Overrides that change the sampler may change the backend it resolves to.
        contestant = dataclasses.replace(contestant, backend=resolve_backend(recipe.sampler)[0])
    return contestant


def _method_run(parent_run_id: str, label: str, method: str) -> str:
    """The variant's child run (found again on a rerun), parent of its rounds; tagged with its method,
    which the LoggedModels of its rounds name."""
    tags = {TAG_VARIANT: label}
    found = tracking.find_child_run(parent_run_id, label, tags)
    if found:
        tracking.set_tags({TAG_METHOD: method}, run_id=found)  # a run logged before contestants were tagged so
        return found
    with tracking.start_child_run(parent_run_id, label, tags={**tags, TAG_METHOD: method}, kind=KIND_CONTESTANT) as run:
        return run.info.run_id


def _log_leaderboard(parent_run_id: str, rows: list[dict], markdown: str) -> None:
    for row in rows:
        metrics = {m.metric(m.LEADERBOARD, row["method"], name): row[name] for name in LOGGED}
        metrics |= {m.metric(m.LEADERBOARD, row["method"], name): value for name, value in row.get("benchmarks", {}).items()}
        tracking.log_metrics(metrics, run_id=parent_run_id)
    tracking.log_table(rows, "leaderboard.json", run_id=parent_run_id)
    tracking.log_text(markdown, "leaderboard.md", run_id=parent_run_id)


@flow(name="compare-methods", validate_parameters=False)
def compare_methods(recipe: Any, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    """The comparison as one Prefect flow; parameters are taken as given, as every method's flow takes them."""
    config = parsed_recipe(recipe, overrides)
    if config.method != "compare":
        raise ValueError(f"the compare-methods flow got a {config.method} recipe")
    with pipeline_run(config, from_stage) as ctx:
        return run_contestants(ctx)
