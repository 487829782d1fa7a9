"""`alignflow compare-methods`: every method on the same model, prompts and token budget, one leaderboard.

Each variant runs its own method body (the same stages, so anything two
variants share is computed once) inside a child MLflow run of the
comparison, with its rounds below it. The leaderboard goes to the parent run
as metrics, a JSON table and a markdown file.
"""

from __future__ import annotations

from prefect import flow

from flows import reporting
from flows.common import pipeline_run
from flows.methods import STAGES, run_method
from flows.seft import run_seft
from pipeline_lib import tracking
from pipeline_lib.comparison import leaderboard_markdown, leaderboard_row, variant_recipe
from pipeline_lib.config import save_resolved
from pipeline_lib.runs import RunLayout, StageForcing
from tasks.models import provision_model

TAG_VARIANT = "alignflow.variant"


@flow(name="compare-methods")
def compare_methods(recipe: str, overrides: list[str] | None = None, from_stage: str | None = None) -> dict:
    with pipeline_run(recipe, overrides) as (config, layout, parent_run_id):
        results = {"base": provision_model(config.model.ref)}
        rows, start = [], None
        for variant in config.compare.methods:
            variant_config = variant_recipe(config, variant, results)
            root = layout.root / variant.label
            variant_layout = RunLayout(root=root, config_hash=save_resolved(variant_config, root))
            method_run = _method_run(parent_run_id, variant.label)
            force = StageForcing(STAGES, None)
            body = run_seft if variant_config.method == "seft" else run_method
            print(f"compare-methods: {variant.label} ({variant_config.method})", flush=True)
            results[variant.label], rounds = body(variant_config, variant_layout, method_run, force)
            start = start or rounds[0]
            rows.append(leaderboard_row(variant.label, rounds[max(rounds)], root))
        markdown = leaderboard_markdown(rows, start)
        _log_leaderboard(parent_run_id, rows, markdown)
        (layout.root / "leaderboard.md").write_text(markdown)
        reporting.publish_leaderboard(f"compare run {layout.name}", markdown, rows, parent_run_id)
        return {
            "run_dir": str(layout.root),
            "mlflow_run_id": parent_run_id,
            "leaderboard": rows,
            "leaderboard_markdown": markdown,
            "models": results,
        }


def _method_run(parent_run_id: str, label: str) -> str:
    """The variant's child run (found again on a rerun), parent of its rounds."""
    tags = {TAG_VARIANT: label}
    found = tracking.find_child_run(parent_run_id, label, tags)
    if found:
        return found
    with tracking.start_child_run(parent_run_id, label, tags=tags, kind="method") as run:
        return run.info.run_id


def _log_leaderboard(parent_run_id: str, rows: list[dict], markdown: str) -> None:
    for row in rows:
        metrics = {f"leaderboard/{row['method']}/{name}": row[name] for name in ("score", "pass_rate", "length", "wall_s")}
        tracking.log_metrics(metrics, run_id=parent_run_id)
    tracking.log_table(rows, "leaderboard.json", run_id=parent_run_id)
    tracking.log_text(markdown, "leaderboard.md", run_id=parent_run_id)


FLOW = compare_methods
