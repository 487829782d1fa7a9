"""Metrics, stepped by round."""

import logging
import time
from collections.abc import Mapping

from mlflow.entities import Metric

from pipeline_lib.tracking.names import sanitize_metric_name
from pipeline_lib.tracking.writing import log_batches, resolve_run_id

_log = logging.getLogger(__name__)


def log_metrics(
    metrics: Mapping[str, float | None],
    step: int | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
) -> dict[str, str]:
    """Log ``metrics`` at ``step`` (MLflow's default 0 when None); with ``model_id``, as that
    LoggedModel's metrics too (its page lists them).

    Names are sanitised (see :func:`sanitize_metric_name`). None values are
    skipped: a stage that could not compute a metric should not stop the run.
    NaN and infinities are kept, because MLflow stores them and a diverged
    loss is worth seeing. Returns the logged names: original -> MLflow name.
    """
    run_id = resolve_run_id(run_id)
    timestamp_ms = int(time.time() * 1000)
    source_of: dict[str, str] = {}
    entries = []
    for name, value in metrics.items():
        if value is None:
            _log.info("metric %r has no value at step %s; not logged", name, step)
            continue
        key = sanitize_metric_name(name)
        if key in source_of:
            raise ValueError(f"metric names {source_of[key]!r} and {name!r} both become {key!r}")
        source_of[key] = name
        entries.append(Metric(key, float(value), timestamp_ms, step or 0, model_id=model_id))
    log_batches(run_id, metrics=entries)
    return {name: key for key, name in source_of.items()}
