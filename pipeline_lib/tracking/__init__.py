"""MLflow helpers: one parent run per pipeline run, one child per round or stage.

Typical use::

    from pipeline_lib import tracking

    tracking.configure(uri, "alignflow")           # None: the local SQLite store
    with tracking.start_pipeline_run("alignflow", name, config, config_hash) as run:
        with tracking.start_child_run(run.info.run_id, "round-0", step=0) as child:
            tracking.log_metrics({"train/loss": 0.7}, step=0, run_id=child.info.run_id)

Every logging helper takes an optional ``run_id``: without it they log into the
run active in the calling thread (the parent); MLflow keeps active runs per
thread, so code in a Prefect task thread, and any child run, passes the id.
"""

from pipeline_lib.tracking.offline import keep_mlflow_offline

# Must run before anything below imports mlflow: MLflow starts its telemetry
# client at import time.
keep_mlflow_offline()

from pipeline_lib.tracking.artifacts import (  # noqa: E402
    log_artifact,
    log_dataset,
    log_figure,
    log_table,
    log_text,
)
from pipeline_lib.tracking.metrics import log_metrics, sanitize_metric_name  # noqa: E402
from pipeline_lib.tracking.params import flatten_params, log_config  # noqa: E402
from pipeline_lib.tracking.runs import (  # noqa: E402
    find_child_run,
    find_run,
    set_tags,
    start_child_run,
    start_pipeline_run,
)
from pipeline_lib.tracking.store import (  # noqa: E402
    configure,
    default_tracking_uri,
    run_page,
    run_url,
    ui_address,
)

__all__ = [
    "configure",
    "default_tracking_uri",
    "find_child_run",
    "find_run",
    "flatten_params",
    "log_artifact",
    "log_config",
    "log_dataset",
    "log_figure",
    "log_metrics",
    "log_table",
    "log_text",
    "run_page",
    "run_url",
    "sanitize_metric_name",
    "set_tags",
    "start_child_run",
    "start_pipeline_run",
    "ui_address",
]
