"""`alignflow runs` and `alignflow compare`: finished pipeline runs, read back from MLflow.

Only parent runs (tag ``alignflow.kind=pipeline``) count: each holds its
config (flattened as params, and whole as ``config.yaml``) and every round's metrics
stepped by round, so two of them can be compared without their run folders.
"""

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from urllib.parse import quote

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Run
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from pipeline_lib import tracking
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import alignflow_home
from pipeline_lib.reporting.metrics import (
    EVAL_LENGTH,
    EVAL_PASS_RATE,
    EVAL_SCORE,
    LEADERBOARD,
    REVISE_MAJOR,
    REVISE_MALFORMED,
    REVISE_MINOR,
    REVISE_NONE,
    SELECT_ACCEPTED,
    TRAIN_LOSS,
)
from pipeline_lib.reporting.figures import PLOTTED, new_figure, plot_by_round
from pipeline_lib.reporting.tables import render_text
from pipeline_lib.benchmarks.bootstrap import BootstrapInterval
from pipeline_lib.suite.intervals import score_interval
from pipeline_lib.tracking.runs import KIND_PIPELINE, TAG_CONFIG_HASH, TAG_KIND, TAG_RUN_DIR
from pipeline_lib.tracking.store import _check_server_reachable, _is_http, _first_line

MIN_PREFIX = 6
# The per-round columns `alignflow run` prints; per-family scores and the rest only with --all-metrics.
HEADLINE_METRICS = (
    EVAL_SCORE,
    EVAL_PASS_RATE,
    EVAL_LENGTH,
    TRAIN_LOSS,
    REVISE_NONE,
    REVISE_MINOR,
    REVISE_MAJOR,
    REVISE_MALFORMED,
    SELECT_ACCEPTED,
)
# compare-methods parents log one leaderboard, not rounds (those are under their method runs).
BOARD_PREFIX = f"{LEADERBOARD}/"
_PAGE = 200
Metrics = dict[str, dict[int, float]]  # metric -> round -> value
_CELL_CHARS = 40


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    experiment: str
    experiment_id: str
    status: str
    started: datetime
    method: str
    rounds: int
    score: float | None  # eval/score of the last round
    config_hash: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.run_id[:8]})"


@dataclass(frozen=True)
class Comparison:
    tracking_uri: str
    runs: list[RunSummary]
    config_diff: dict[str, list[str | None]]  # key -> its value in each run (None: not set)
    metrics: list[Metrics]  # per run, all the parent's metrics
    # Per run after the first: its last round's score against the first run's, paired by prompt, or why not.
    intervals: list[BootstrapInterval | str] = field(default_factory=list)

    @property
    def url(self) -> str | None:
        return compare_url(self.tracking_uri, [r.experiment_id for r in self.runs], [r.run_id for r in self.runs])


def store_uri(explicit: str | None = None) -> str:
    """The store `alignflow run` logs to: this URI, else $MLFLOW_TRACKING_URI, else the local one."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri()


def list_runs(experiment: str | None = None, limit: int = 20, tracking_uri: str | None = None) -> list[RunSummary]:
    """The newest ``limit`` pipeline runs of ``experiment``, or of every experiment."""
    if limit < 1:
        raise UserError(f"--limit must be at least 1, not {limit}")
    uri = store_uri(tracking_uri)
    with _store(uri) as client:
        experiments = _experiments(client, uri, experiment)
        summaries = []
        for run in _pipeline_runs(client, experiments, limit):
            history = _history(client, run.info.run_id, EVAL_SCORE)
            summaries.append(_summary(run, experiments, history))
        return summaries


def compare_runs(refs: Sequence[str], experiment: str | None = None, tracking_uri: str | None = None) -> Comparison:
    """Config differences and per-round metrics of pipeline runs given by id, id prefix or name."""
    if len(refs) < 2:
        raise UserError(f"compare needs at least two runs, got {len(refs)}; `alignflow runs` lists them")
    uri = store_uri(tracking_uri)
    with _store(uri) as client:
        experiments = _experiments(client, uri, experiment)
        candidates = list(_pipeline_runs(client, experiments))
        runs = [resolve_run(ref, candidates, uri) for ref in refs]
        for ref, run in zip(refs, runs):
            if sum(other.info.run_id == run.info.run_id for other in runs) > 1:
                raise UserError(f"run {ref!r} ({run.info.run_id}) is given twice")
        metrics = [{key: _history(client, run.info.run_id, key) for key in run.data.metrics} for run in runs]
        # The params are config.yaml flattened (tracking.log_config), so they
        # say as much as the artifact without downloading it.
        configs = [run.data.params for run in runs]
    summaries = [_summary(run, experiments, history.get(EVAL_SCORE, {})) for run, history in zip(runs, metrics)]
    scores = [_last_scores(run, history.get(EVAL_SCORE, {})) for run, history in zip(runs, metrics)]
    intervals = [_against_first(scores[0], other) for other in scores[1:]]
    return Comparison(uri, summaries, config_diff(configs), metrics, intervals)


def _last_scores(run: Run, scores: Mapping[int, float]) -> Path | str:
    """The score stage output of the run's last evaluated round, or why there is none."""
    folder = run.data.tags.get(TAG_RUN_DIR)
    if not scores or not folder:
        return "no held-out scores logged"
    path = Path(folder) / f"round-{max(scores)}" / "score"
    return path if path.exists() else f"its run folder is not here ({path})"


def _against_first(first: Path | str, other: Path | str) -> BootstrapInterval | str:
    if isinstance(first, str) or isinstance(other, str):
        return f"the first run: {first}" if isinstance(first, str) else other
    interval = score_interval(other, first, None, seed=0)
    return interval if interval.n else "no held-out prompt in common"


def resolve_run(ref: str, candidates: Sequence[Run], uri: str) -> Run:
    """The one run ``ref`` names: its id, its name, or a unique prefix of its id."""
    matches = [r for r in candidates if r.info.run_id == ref] or [r for r in candidates if r.info.run_name == ref]
    if not matches and len(ref) >= MIN_PREFIX:
        matches = [r for r in candidates if r.info.run_id.startswith(ref.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(
            f"no pipeline run matches {ref!r} in {uri} (give a run id, a unique id prefix of "
            f"{MIN_PREFIX}+ characters or a run name; `alignflow runs` lists them)"
        )
    ids = ", ".join(r.info.run_id[:12] for r in matches)
    raise UserError(f"{ref!r} matches {len(matches)} pipeline runs ({ids}); give more of the run id")


def config_diff(configs: Sequence[Mapping[str, str]]) -> dict[str, list[str | None]]:
    """The keys whose value is not the same in every config, in config order."""
    keys = dict.fromkeys(key for config in configs for key in config)
    values = {key: [config.get(key) for config in configs] for key in keys}
    return {key: row for key, row in values.items() if len(set(row)) > 1}


def compare_url(tracking_uri: str, experiment_ids: Sequence[str], run_ids: Sequence[str]) -> str | None:
    """The MLflow UI's compare-runs page for these runs, said the way ``run_url`` says a run page."""
    # The query is what MLflow's UI builds (JSON.stringify, so no spaces); quoting
    # keeps terminals from ending the link at a '"', and the page decodes it.
    runs, experiments = (_query_list(items) for items in (run_ids, sorted(set(experiment_ids))))
    page = f"#/compare-runs?runs={runs}&experiments={experiments}"
    # run_url knows how each kind of store is reached (a server, or a UI to start first); only the page differs.
    run_page = "#/experiments/E/runs/R"
    location = tracking.run_url(tracking_uri, "E", "R")
    return location.replace(run_page, page) if location and run_page in location else None


def format_runs(runs: Sequence[RunSummary]) -> str:
    header = ["run", "name", "experiment", "status", "started", "method", "rounds", "score", "config"]
    rows = [
        [
            r.run_id[:8],
            r.name,
            r.experiment,
            r.status,
            f"{r.started:%Y-%m-%d %H:%M}",
            r.method,
            str(r.rounds),
            _number(r.score),
            r.config_hash[:10],
        ]
        for r in runs
    ]
    return render_text([header, *rows], right={6, 7})


def format_comparison(comparison: Comparison, all_metrics: bool = False) -> str:
    """Config differences, then metrics by round, one column per run; the headline metrics unless ``all_metrics``."""
    labels = [run.label for run in comparison.runs]
    per_round = [{k: h for k, h in m.items() if not k.startswith(BOARD_PREFIX)} for m in comparison.metrics]
    boards = [{k: _last(h) for k, h in m.items() if k.startswith(BOARD_PREFIX)} for m in comparison.metrics]
    parts = [_config_section(comparison.config_diff, labels), *_rounds_section(per_round, labels, all_metrics)]
    parts += [f"{label} has no rounds logged on it" for label, metrics in zip(labels, per_round) if not metrics]
    if comparison.intervals:
        lines = [
            f"{label}: {c.describe() + f' ({c.n} prompts)' if isinstance(c, BootstrapInterval) else 'no interval: ' + c}"
            for label, c in zip(labels[1:], comparison.intervals)
        ]
        parts.append(f"score against {labels[0]}, last rounds, 95 % paired bootstrap:\n" + "\n".join(lines))
    if any(boards):
        rows = [[key, *(_number(b.get(key)) for b in boards)] for key in sorted(set().union(*boards))]
        table = render_text([["metric", *labels], *rows], right=range(1, 1 + len(labels)))
        parts.append("leaderboard (compare-methods runs):\n" + table)
    return "\n\n".join(parts)


def write_plot(comparison: Comparison, path: str | Path | None = None) -> Path | None:
    """Mean score and pass rate by round, one line per run, as a PNG; None if no run has them."""
    if not any(key in m for key, _ in PLOTTED for m in comparison.metrics):
        return None
    ids = "-".join(run.run_id[:8] for run in comparison.runs)
    path = Path(path) if path else alignflow_home() / "compare" / f"{ids}.png"
    figure, panels = new_figure(10, 4, len(PLOTTED))
    for axes, (key, title) in zip(panels, PLOTTED):
        lines = {run.label: metrics.get(key, {}) for run, metrics in zip(comparison.runs, comparison.metrics)}
        plot_by_round(axes, lines, f"{title} ({key})")
    panels[0].legend(fontsize="small")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as error:
        raise UserError(f"cannot write the plot to {path}: {error}") from error
    return path


def _config_section(diff: Mapping[str, Sequence[str | None]], labels: Sequence[str]) -> str:
    if not diff:
        return "config: identical"
    rows = [[key, *(_cell(value) for value in values)] for key, values in diff.items()]
    return "config differences:\n" + render_text([["key", *labels], *rows])


def _rounds_section(per_round: Sequence[Metrics], labels: Sequence[str], every: bool) -> list[str]:
    present = set().union(*per_round)
    shown = [key for key in HEADLINE_METRICS if key in present]
    hidden = sorted(present - set(shown))
    if every:
        shown, hidden = shown + hidden, []
    rounds = sorted({step for m in per_round for key in shown for step in m.get(key, {})})
    rows = [
        [str(step), key, *(_number(m.get(key, {}).get(step)) for m in per_round)]
        for step in rounds
        for key in shown
        if any(step in m.get(key, {}) for m in per_round)
    ]
    parts = []
    if rows:
        table = render_text([["round", "metric", *labels], *rows], right=range(2, 2 + len(labels)))
        parts.append("metrics by round:\n" + table)
    if hidden:
        parts.append(f"(+{len(hidden)} more per-round metrics; --all-metrics shows them)")
    return parts


@contextmanager
def _store(uri: str) -> Iterator[MlflowClient]:
    if _is_http(uri):
        _check_server_reachable(uri)
    try:
        yield MlflowClient(uri)
    except (MlflowException, OSError, SQLAlchemyError) as error:
        raise UserError(f"cannot read MLflow store {uri!r}: {_first_line(error)}") from error


def _experiments(client: MlflowClient, uri: str, name: str | None) -> dict[str, str]:
    """Experiment id -> name: just ``name``, or every active experiment."""
    if name is None:
        return {e.experiment_id: e.name for e in _paged(client.search_experiments)}
    found = client.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage == LifecycleStage.DELETED:
        raise UserError(f"no experiment {name!r} in {uri}")
    return {found.experiment_id: found.name}


def _pipeline_runs(client: MlflowClient, experiments: Mapping[str, str], limit: int | None = None) -> Iterator[Run]:
    """Pipeline parent runs, newest first."""
    if not experiments:
        return iter(())
    query = f"tags.`{TAG_KIND}` = '{KIND_PIPELINE}'"
    newest_first = ["attributes.start_time DESC"]
    runs = _paged(client.search_runs, experiment_ids=list(experiments), filter_string=query, order_by=newest_first)
    return islice(runs, limit)


def _paged(search: Callable, **arguments) -> Iterator:
    token = None
    while True:
        page = search(max_results=_PAGE, page_token=token, **arguments)
        yield from page
        token = page.token
        if not token:
            return


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    # Oldest first, so a step logged again (a resumed run) keeps its latest value.
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
    return {m.step: m.value for m in points}


def _summary(run: Run, experiments: Mapping[str, str], scores: Mapping[int, float]) -> RunSummary:
    return RunSummary(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        experiment=experiments.get(run.info.experiment_id, run.info.experiment_id),
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        started=datetime.fromtimestamp(run.info.start_time / 1000),
        method=run.data.params.get("method", "?"),
        rounds=len(scores),
        score=_last(scores),
        config_hash=run.data.tags.get(TAG_CONFIG_HASH, ""),
    )


def _last(history: Mapping[int, float] | None) -> float | None:
    return history[max(history)] if history else None


def _query_list(items: Sequence[str]) -> str:
    return quote(json.dumps(list(items), separators=(",", ":")), safe="[],")


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _cell(value: str | None) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= _CELL_CHARS else value[: _CELL_CHARS - 1] + "…"

