"""`alignflow compare-methods`: every method on the same model, prompts and token budget, one leaderboard.

Each variant runs its own method body (the same stages, so anything two
variants share is computed once) inside a child MLflow run of the
comparison, with its rounds below it. The leaderboard goes to the parent run
as metrics, a JSON table and a markdown file. The comparison has one
``--from-stage``: the first stage of that name any contestant reaches is
recomputed, and every stage after it, in that contestant and the ones after.

With a recipe's ``orchestration`` section, contestants that name none of
each other (``@label`` in their overrides) run at once, each a Prefect task
on a local process pool or a Ray cluster (``methods.orchestration``); the child
runs, registered models and leaderboard are still made here, in the
recipe's order. ``--from-stage`` runs them in order.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from contextlib import nullcontext
from typing import Any

from prefect import flow

from methods import METHODS
from methods.compare.leaderboard import BOARDS
from methods.compare.variants import contestant_needs, variant_recipe
from methods.jobs import ORCHESTRATION_FILE, portable, run_job
from methods.orchestration import Cluster, cluster, parallel, run_dependent
from methods.run import parsed_recipe, pipeline_run
from methods.shared import starting_model
from pipeline_lib import tracking
from pipeline_lib.config import save_resolved
from pipeline_lib.reporting import metrics as m
from pipeline_lib.sampling import resolve_backend
from pipeline_lib.store import atomic_write_text
from pipeline_lib.store.runs import RunLayout
from pipeline_lib.tracking.lineage import KIND_CONTESTANT, TAG_METHOD
from tasks import reporting
from tasks.context import RunContext
from tasks.evaluation import register_model
from tasks.stage import declared_resources

TAG_VARIANT = "alignflow.variant"
# Every contestant's stages are the comparison's: --from-stage is checked against them before any runs.
# Loaded through the registry, so this flow imports no other method's flow module by name.
BODIES = {name: method.load_body() for name, method in METHODS.items() if method.contestant}


def run_contestants(ctx: RunContext) -> dict[str, Any]:
    """Each contestant (in order, or at once where ``orchestration`` says so), then the leaderboard;
    returns what ``alignflow compare-methods`` prints."""
    layout, parent = ctx.layout, ctx.parent
    orchestration = ctx.recipe.orchestration
    board = BOARDS[METHODS[ctx.recipe.compare.methods[0].method].leaderboard]  # one board for all (methods._compare_check)
    if parallel(orchestration) and ctx.forcing.from_stage is not None:
        # "The first stage of that name any contestant reaches" is only defined when they run in order.
        print("compare-methods: --from-stage runs the contestants one after another", file=sys.stderr, flush=True)
        orchestration = None
    if parallel(orchestration) and orchestration.task_runner == "local" and orchestration.max_workers > 1 and ctx.backend == "vllm":
        # Each thread's contestant starts its own vLLM server: two on one GPU may not fit.
        print("compare-methods: orchestration local with vLLM: each contestant at once starts its own server "
              "(give it room with sampler.vllm.extra_args such as --gpu-memory-utilization, or max_workers: 1)", file=sys.stderr, flush=True)  # fmt: skip
    # At once: an @label naming no earlier contestant fails before anything runs (in order: when reached, as always).
    needs = contestant_needs(ctx.recipe.compare.methods) if parallel(orchestration) else {}
    # Opened first: a cluster that does not answer fails the run before any stage runs.
    with cluster(orchestration) if parallel(orchestration) else nullcontext() as found:
        results = {"base": starting_model(ctx)}
        if found is None:
            outcomes = _in_order(ctx, results)
        else:
            outcomes = _at_once(ctx, found, needs, results["base"])
        rows, start, registered = [], None, {}
        for variant in ctx.recipe.compare.methods:  # the recipe's order, whichever finished first
            outcome = outcomes[variant.label]
            results[variant.label], rounds = outcome["final_model"], outcome["rounds"]
            if found is not None:
                registered[variant.label] = _register(ctx, variant.label, results[variant.label])
            else:
                registered[variant.label] = outcome["registered"]
            start = start or rounds.get(0)
            rows.append(board.row(variant.label, rounds, layout.root / variant.label))
    markdown = board.markdown(rows, start)
    _log_leaderboard(parent, rows, markdown, board.logged)
    (layout.root / "leaderboard.md").write_text(markdown)
    reporting.publish_leaderboard(f"compare run {layout.name}", markdown, rows, parent)
    result = {
        "run_dir": str(layout.root),
        "mlflow_run_id": parent,
        "leaderboard": rows,
        "leaderboard_markdown": markdown,
        "models": results,
        "registered_models": {label: uri for label, uri in registered.items() if uri},
    }
    if found is not None:
        # Where each contestant ran and when: the record that they ran at once.
        result["orchestration"] = {**found.describe(), "contestants": {label: o["ran"] for label, o in outcomes.items()}}
        atomic_write_text(layout.root / ORCHESTRATION_FILE, json.dumps(result["orchestration"], indent=2, sort_keys=True))
    return result


def _in_order(ctx: RunContext, results: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each contestant in turn in this process, registering its model as it ends (as always)."""
    outcomes = {}
    for variant in ctx.recipe.compare.methods:
        contestant = _prepare(ctx, variant, results)
        print(f"compare-methods: {variant.label} ({variant.method})", flush=True)
        results[variant.label], rounds = BODIES[variant.method](contestant)
        outcomes[variant.label] = {
            "final_model": results[variant.label], "rounds": rounds,
            "registered": _register(ctx, variant.label, results[variant.label]),
        }  # fmt: skip
    return outcomes


def _at_once(ctx: RunContext, found: Cluster, needs: dict[str, set[str]], base: str) -> dict[str, dict[str, Any]]:
    """Every contestant as a Prefect task on the cluster's runner, each once the contestants it names have ended."""
    variants = {variant.label: variant for variant in ctx.recipe.compare.methods}

    def job(label: str, done: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        variant = variants[label]
        finished = {name: o["result"]["final_model"] for name, o in done.items()}
        contestant = _prepare(ctx, variant, {"base": base, **finished})
        print(f"compare-methods: {label} ({variant.method}) on the {found.kind} task runner", flush=True)
        task = run_job.with_options(name="contestant", task_run_name=f"contestant/{label}")
        return task, {"label": label, "context": portable(contestant, f"compare.methods[{label}]"), "function": play,
                      "args": (variant.method,)}  # fmt: skip

    # A contestant runs every kind of stage in turn, so it holds the most any stage asks for.
    done = run_dependent(found, list(variants), needs, job, declared_resources())
    return {label: {**outcome["result"], "ran": outcome["ran"]} for label, outcome in done.items()}


def play(contestant: RunContext, method: str) -> dict[str, Any]:
    """One contestant's method body, wherever its job runs."""
    final_model, rounds = BODIES[method](contestant)
    return {"final_model": final_model, "rounds": rounds}


def _prepare(ctx: RunContext, variant: Any, results: dict[str, str]) -> RunContext:
    """The contestant's recipe (its @label overrides filled from ``results``), folder and MLflow run."""
    recipe = variant_recipe(ctx.recipe, variant, results)
    root = ctx.layout.root / variant.label
    return _contestant(ctx, recipe, RunLayout(root, save_resolved(recipe, root)), variant)


def _register(ctx: RunContext, label: str, model: str | None) -> str | None:
    # Each contestant's final model under its own name: compare-tiny-sft, compare-tiny-spin...
    return register_model(ctx.parent, model, f"{ctx.recipe.name}-{label}")


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


def _log_leaderboard(parent_run_id: str, rows: list[dict], markdown: str, logged: tuple[str, ...]) -> None:
    """Each row's numbers as parent-run metrics, leaderboard/<label>/<column>, and the table as artifacts."""
    for row in rows:
        # A column a contestant has no number for (no baseline round, no world-model prediction) is left out.
        metrics = {m.metric(m.LEADERBOARD, row["method"], name): row[name] for name in logged if row[name] is not None}
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
