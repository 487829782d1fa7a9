"""The `alignflow` command line.

User mistakes (a bad recipe, a missing file, an unknown model) end with one
line on stderr and exit code 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import alignflow_home

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Before torch is imported (every command imports it lazily): back torch's large CPU allocations (a
# training step's logits) with 2 MB transparent huge pages. Page faults otherwise take about half of
# a tiny recipe's training time (BENCHMARKS.md); the numbers computed are the same.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow an option (`data inspect r.yaml --role sft train.max_length=64`).
    if extra and isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        # Every command keeps state there: an unusable home is one line here, not a traceback later.
        alignflow_home()
        return args.handler(args) or 0
    except UserError as err:
        print(f"alignflow: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if argv is None:  # this process is the command: nothing follows but its exit
            _ignore_further_interrupts()
        print("alignflow: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `alignflow check … | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _ignore_further_interrupts() -> None:
    """The command is stopping already: another ctrl-C must not turn exit 130 into a death by SIGINT."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands")

    run = _command(commands, "run", "run a recipe as a resumable Prefect flow", _run)
    run.add_argument("recipe", help="path to a recipe YAML, e.g. configs/seft.yaml")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=1e-5")
    run.add_argument("--from-stage", metavar="NAME", help="recompute this stage and every stage after it")
    _launch_flags(run)

    compare = _command(
        commands, "compare-methods", "run every method of a comparison recipe and log one leaderboard", _compare
    )
    compare.add_argument("recipe", help="path to a comparison recipe, e.g. configs/compare.yaml")
    compare.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    compare.add_argument(
        "--from-stage", metavar="NAME", help="recompute the first such stage any contestant reaches and every stage after it"
    )
    _launch_flags(compare)

    runs = _command(commands, "runs", "list the pipeline runs logged to MLflow, newest first", _runs)
    runs.add_argument("--experiment", metavar="NAME", help="only this experiment (default: all of them)")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (default 20)")
    runs.add_argument("--tracking-uri", metavar="URI", help="default: $MLFLOW_TRACKING_URI, else the local store")

    finished = _command(
        commands, "compare", "compare finished runs: config differences, metrics by round, a plot", _compare_runs
    )
    finished.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique id prefix (6+ chars) or run name")
    finished.add_argument("--experiment", metavar="NAME", help="look the runs up in this experiment only")
    finished.add_argument("--tracking-uri", metavar="URI", help="default: $MLFLOW_TRACKING_URI, else the local store")
    finished.add_argument("--plot", metavar="PATH", help="PNG to write (default: under $ALIGNFLOW_HOME/compare)")
    finished.add_argument("--all-metrics", action="store_true", help="every per-round metric, per family included")

    check = _command(commands, "check", "validate a recipe and print it resolved, without running it", _check)
    check.add_argument("recipe")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    models = commands.add_parser("models", help="provision models").add_subparsers(title="models commands")
    pull = _command(models, "pull", "convert a packaged model once into the model cache", _models_pull)
    pull.add_argument("ref", help="alias (see `alignflow models list`), local folder or hub id")
    pull.add_argument("--force", action="store_true", help="convert again even if cached")
    _command(models, "list", "list the model aliases and what is cached", _models_list)

    data = commands.add_parser("data", help="inspect datasets").add_subparsers(title="data commands")
    inspect = _command(
        data, "inspect", "prepare a recipe's data role as a run would and print its data report, or check one source",
        _data_inspect,
    )  # fmt: skip
    inspect.add_argument("target", help="a recipe YAML (with --role), or a hub id or local file or folder to check")
    inspect.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the recipe's dotted overrides")
    inspect.add_argument("--role", choices=["prompts", "sft", "preference", "revisions"], help="the recipe's data role")
    inspect.add_argument(
        "--kind", default="prompt", choices=["prompt", "answer", "sft", "preference", "revision", "messages"],
        help="a single source's row schema",
    )  # fmt: skip
    inspect.add_argument("--format", default="auto", choices=["auto", "hh-rlhf", "mt-bench", "plain"])
    inspect.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN")
    inspect.add_argument("--split", default="train")

    serve = _command(
        commands, "serve", "serve the flows as Prefect deployments, with their schedules, until ctrl-C", _serve
    )
    serve.add_argument("--file", default=None, help="deployments file (default: deployments/deployments.yaml)")

    deploy = _command(
        commands, "deploy", "register the served deployments on a Prefect work pool, for workers on other machines", _deploy
    )
    deploy.add_argument("--pool", required=True, metavar="NAME", help="the work pool (created if missing)")
    deploy.add_argument("--file", default=None, help="deployments file (default: deployments/deployments.yaml)")
    deploy.add_argument(
        "--pool-type", choices=["process", "kubernetes"], default=None,
        help="type of the pool: checked if it exists, used to create it if not (default: process)",
    )  # fmt: skip
    deploy.add_argument("--image", metavar="IMAGE", help="container image of the flow runs (kubernetes pools)")
    deploy.add_argument(
        "--code-dir", metavar="PATH", default=None,
        help="where this repository is on the workers or in the image (default: this checkout's path)",
    )  # fmt: skip
    deploy.add_argument(
        "--home", metavar="PATH", default=None,
        help="ALIGNFLOW_HOME of the flow runs, a shared folder at this path on every worker (default: each worker's own)",
    )  # fmt: skip

    _command(commands, "doctor", "check the installation and exit non-zero if something required is broken", _doctor)
    ui = _command(commands, "ui", "start the Prefect and MLflow UIs on 127.0.0.1 (ctrl-C stops both)", _ui)
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    return parser


def _command(commands, name: str, help_text: str, handler: Callable) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(handler=handler, command_name=name)
    return sub


def _launch_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--verbose",
        action="store_true",
        help="show libraries' progress bars, log lines and warnings here (default: in a log file under $ALIGNFLOW_HOME/logs)",
    )
    command.add_argument(
        "--verify",
        action="store_true",
        help="before reusing a finished stage, check its content digest too (default: file sizes and Parquet footers)",
    )


def _launch(args, **options) -> int:
    from flows.console import quiet_libraries, report
    from pipeline_lib.core.environment import environment

    with ExitStack() as scope:  # what this command changes in the process ends with it
        log_file = None if args.verbose else scope.enter_context(quiet_libraries(args.command_name))
        from flows.launch import launch
        from tasks.stage import VERIFY_ENV

        if args.verify:  # read by every stage, in this process and its flow runs
            scope.enter_context(environment({VERIFY_ENV: "1"}))
        # A mistake in the recipe raises before this, and stays one line.
        code = launch(args.recipe, args.overrides, **options)
    if log_file is not None:
        report(log_file)
    return code


def _run(args) -> int:
    return _launch(args, from_stage=args.from_stage)


def _compare(args) -> int:
    return _launch(args, from_stage=args.from_stage, method="compare")


def _runs(args) -> int:
    from pipeline_lib.tracking.compare import format_runs, list_runs, store_uri

    runs = list_runs(args.experiment, args.limit, args.tracking_uri)
    print(format_runs(runs) if runs else f"no pipeline runs in {store_uri(args.tracking_uri)}")
    return 0


def _compare_runs(args) -> int:
    from pipeline_lib.tracking.compare import compare_runs, format_comparison, write_plot

    comparison = compare_runs(args.runs, args.experiment, args.tracking_uri)
    print(format_comparison(comparison, all_metrics=args.all_metrics))
    print(f"\nplot: {write_plot(comparison, args.plot) or 'none (no run has eval metrics by round)'}")
    print(f"mlflow compare: {comparison.url or comparison.tracking_uri}")
    return 0


def _check(args) -> int:
    import yaml

    from methods.recipe import load_recipe
    from pipeline_lib.config import config_hash

    recipe = load_recipe(args.recipe, args.overrides)
    print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
    print(f"# config hash {config_hash(recipe)}")
    return 0


def _models_pull(args) -> int:
    from pipeline_lib.models import ALIASES, pull, resolve_model

    print(pull(args.ref, force=args.force) if args.ref in ALIASES else resolve_model(args.ref))
    return 0


def _models_list(args) -> int:
    from pipeline_lib.models import describe_models

    for line in describe_models():
        print(line)
    return 0


def _data_inspect(args) -> int:
    if args.role:
        return _inspect_role(args)
    if args.overrides:
        raise UserError("KEY=VALUE overrides apply to a recipe: give one with --role ROLE")
    from pipeline_lib.data import load_rows

    columns = dict(_pair(item, "--column") for item in args.column)
    result = load_rows(args.target, args.kind, columns=columns or None, split=args.split, format=args.format)
    print(result.summary())
    for skipped in result.examples:
        print(f"  skipped {skipped.source} row {skipped.row}: {skipped.reason}")
    if len(result.rows):
        print(f"first row: {result.rows[0]}")
    return 0


def _inspect_role(args) -> int:
    from methods.data import inspect_role
    from methods.recipe import load_recipe
    from pipeline_lib.data.prepare import format_report

    print(format_report(inspect_role(load_recipe(args.target, args.overrides), args.role)))
    return 0


def _pair(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise UserError(f"{flag} {item!r} must look like FIELD=COLUMN")
    return key, value


def _doctor(args) -> int:
    from flows.doctor import doctor

    return doctor()


def _serve(args) -> int:
    from flows.serve import DEFAULT_FILE, serve_deployments

    return serve_deployments(args.file or DEFAULT_FILE)


def _deploy(args) -> int:
    from flows.deploy import DEFAULT_FILE, deploy_to_pool

    return deploy_to_pool(args.pool, args.file or DEFAULT_FILE, args.pool_type, args.image, args.code_dir, args.home)


def _ui(args) -> int:
    from flows.ui import serve_uis

    return serve_uis(prefect_port=args.prefect_port, mlflow_port=args.mlflow_port)


if __name__ == "__main__":
    sys.exit(main())
