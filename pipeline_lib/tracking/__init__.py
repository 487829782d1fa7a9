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

Names load on first use: the recipe's ``tracking`` section (``tracking.config``)
is read by every command, and must not load MLflow with it.
"""

from pipeline_lib.core.lazy import lazy_attributes
from pipeline_lib.tracking.offline import keep_mlflow_offline

# Must run before anything imports mlflow: MLflow starts its telemetry client at import time.
keep_mlflow_offline()

_WHERE = {
    **dict.fromkeys(("log_artifact", "log_dataset", "log_figure", "log_table", "log_text"), "artifacts"),
    **dict.fromkeys(("log_metrics", "sanitize_metric_name"), "metrics"),
    **dict.fromkeys(("flatten_params", "log_config"), "params"),
    **dict.fromkeys(("find_child_run", "find_run", "set_tags", "start_child_run", "start_pipeline_run"), "runs"),
    **dict.fromkeys(("configure", "default_tracking_uri", "run_page", "run_url", "ui_address"), "store"),
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
