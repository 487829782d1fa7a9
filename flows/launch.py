"""`alignflow run`: validate a recipe, run its flow, print where to look."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from flows.local_api import local_prefect_api
from methods import METHODS
from methods.preflight import check_data_sources
from methods.recipe import load_recipe
from pipeline_lib.core import interrupts
from pipeline_lib.core.errors import UserError
from pipeline_lib.models import check_reference
from pipeline_lib.store.runs import StageForcing
from pipeline_lib.tracking import lineage
from tasks.stage import DECLARED


def flow_for(method: str):
    """The flow the registry names for ``method`` (imported only now: it loads Prefect and the method's code)."""
    if method not in METHODS:
        raise UserError(f"method {method!r} has no flow yet; available: {', '.join(METHODS)}")
    return METHODS[method].load_flow()


_FAILED_WITH_USER_ERROR = re.compile(r"^Finished in state Failed\(.*encountered an exception UserError: ")


class _UserErrorsInOneLine(logging.Filter):
    """Keep Prefect's console from printing tracebacks for mistakes the CLI reports in one line.

    Only the console is filtered: the Prefect UI keeps the full record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserError):
            return False
        # Prefect's summary line of a failed run names the exception type; only
        # that exact form is dropped, never a message that merely mentions it.
        return not _FAILED_WITH_USER_ERROR.search(record.getMessage())


def _quiet_user_errors_on_console() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _UserErrorsInOneLine) for f in handler.filters):
            handler.addFilter(_UserErrorsInOneLine())


def launch(recipe_path: str, overrides: list[str], from_stage: str | None = None, method: str | None = None) -> int:
    # Validate before Prefect starts, so a typo costs a second, not a server start.
    # The flow gets the parsed recipe: it is read once per command.
    recipe = load_recipe(recipe_path, overrides)
    if method is not None and recipe.method != method:
        raise UserError(f"{recipe_path}: method is {recipe.method!r}; this command runs {method!r} recipes")
    flow = flow_for(recipe.method)
    StageForcing(sorted(DECLARED), from_stage)  # a misspelt --from-stage fails here, naming the stages
    check_reference(recipe.model.ref)
    check_data_sources(recipe)
    _quiet_user_errors_on_console()
    print(f"alignflow: running {recipe.method} recipe {recipe.name!r} ({recipe_path})", file=sys.stderr)
    # A ctrl-C raises KeyboardInterrupt and is also recorded: the stages, the
    # training steps and the sampling shards check the record, so one swallowed
    # where it landed (a __del__, Prefect's teardown) still stops the run.
    with interrupts.sticky_interrupts():
        with local_prefect_api() as private:
            with lineage.running_command(_command_line(recipe_path, overrides, from_stage, method)):
                state = flow(recipe=recipe, from_stage=from_stage, return_state=True)
            flow_run_id = state.state_details.flow_run_id
            prefect_location = _prefect_location(flow_run_id, private)
        # Last check: an interrupt the flow never saw still ends the command with 130, not 0.
        interrupts.check()
    try:
        result = state.result()  # re-raises the flow's error, a UserError included
    except UserError:
        raise
    except Exception:
        print(f"alignflow: flow run {flow_run_id} failed; rerun the same command to resume", file=sys.stderr)
        raise
    print_report(result, flow_run_id, prefect_location)
    return 0


def _command_line(recipe_path: str, overrides: list[str], from_stage: str | None, method: str | None) -> list[str]:
    """The command as the user typed it, to name the MLflow run's source."""
    command = "compare-methods" if method == "compare" else "run"
    return ["alignflow", command, recipe_path, *overrides, *(["--from-stage", from_stage] if from_stage else [])]


def print_report(result: dict, flow_run_id, prefect_location: str) -> None:
    if "leaderboard" in result:
        print("\n" + result["leaderboard_markdown"])
    else:
        print_rounds(result)
    print(f"\nrun folder:  {result['run_dir']}")
    for label, uri in result.get("registered_models", {}).items():
        print(f"registered:  {label} as {uri}")
    if result.get("final_model"):
        registered = f" (registered: {result['registered_model']})" if result.get("registered_model") else ""
        print(f"final model: {result['final_model']}{registered}")
    print(f"prefect:     flow run {flow_run_id} — {prefect_location}")
    print(f"mlflow:      run {result['mlflow_run_id']} — {_mlflow_location(result['mlflow_run_id'])}")


def print_rounds(result: dict) -> None:
    from pipeline_lib.reporting.tables import family_table, text_table
    from pipeline_lib.benchmarks.intervals import benchmark_lines
    from pipeline_lib.suite.intervals import describe_delta
    from pipeline_lib.suite.scoring import read_metrics

    rounds = result["rounds"]
    print("\n" + text_table(rounds))
    deltas = {k: describe_delta(metrics) for k, metrics in sorted(rounds.items())}
    for k, delta in deltas.items():
        if delta:
            print(f"score, round {k} against round 0: {delta} (paired bootstrap over the held-out prompts)")
    for line in benchmark_lines(rounds):
        print(line)
    last_scores = Path(result["run_dir"]) / f"round-{max(rounds)}" / "score"
    if last_scores.exists():  # suite runs; a CEL run plays games instead
        print("\nper family, last round:\n" + family_table(read_metrics(last_scores)))


def _mlflow_location(run_id: str) -> str:
    import mlflow

    from pipeline_lib import tracking

    uri = mlflow.get_tracking_uri()
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return tracking.run_url(uri, experiment_id, run_id) or uri


def _prefect_location(flow_run_id, private: bool) -> str:
    from tasks.reporting import flow_run_url

    url = flow_run_url(str(flow_run_id))
    return f"stored locally; `alignflow ui` (or `make ui`) shows it at {url}" if private else url
