"""What a command prints: alignflow's own lines and one bar per stage; libraries' bars, logs and warnings go
to a log file unless ``--verbose``, named at the end of the run's report.

Must run before the libraries are imported: tqdm reads ``TQDM_DISABLE`` once, when it is first imported,
as the default of every bar (alignflow's own bars pass ``disable=False`` and still show).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline_lib.core.environment import environment
from pipeline_lib.core.home import alignflow_home

# The loggers of the libraries whose console output tells a user nothing (their weights load, a
# deprecation, a generation flag): the log file gets them.
LIBRARY_LOGGERS = (
    "transformers", "datasets", "huggingface_hub", "accelerate", "trl", "peft", "torch", "httpx", "urllib3",
    "filelock", "mlflow", "alembic", "lm_eval", "ray",
)  # fmt: skip


@contextmanager
def quiet_libraries(command: str) -> Iterator[Path]:
    """Send libraries' bars, log records and warnings to a new log file under $ALIGNFLOW_HOME/logs, named by
    what this yields, until the block ends; then put back what it changed (a test calls the CLI in-process,
    and the next command, or a child process it starts, must not inherit this one's quiet)."""
    folder = alignflow_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / f"{command}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    with environment(QUIET_ENV), warnings.catch_warnings():  # the environment before the libraries load
        from mlflow.utils import logging_utils as mlflow_logging
        from transformers.utils import logging as hf_logging

        # transformers gives its root logger a console handler when first asked for a logger: let it do so
        # now, so that what follows replaces it, and puts it back.
        hf_logging.get_logger()
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        loggers = [logging.getLogger(name) for name in (*LIBRARY_LOGGERS, "py.warnings")]
        saved = [(logger, logger.handlers, logger.propagate, logger.level) for logger in loggers]
        saved_stream = mlflow_logging.MLFLOW_LOGGING_STREAM
        for logger in loggers:
            logger.handlers = [handler]
            logger.propagate = False
        # Levels stay as the libraries set them (warnings and worse), except MLflow's notes, which it would
        # print.
        logging.getLogger("mlflow").setLevel(logging.INFO)
        # MLflow prints some notes ("Successfully registered model") straight to this stream.
        mlflow_logging.MLFLOW_LOGGING_STREAM = _LoggedStream(logging.getLogger("mlflow"))
        logging.captureWarnings(True)
        warnings.simplefilter("default")
        try:
            yield log_file
        finally:
            logging.captureWarnings(False)
            mlflow_logging.MLFLOW_LOGGING_STREAM = saved_stream
            for logger, handlers, propagate, level in saved:
                logger.handlers, logger.propagate = handlers, propagate
                logger.setLevel(level)
            handler.close()


# TQDM_DISABLE reaches children too (a launched training worker); MLflow would give its logger a console
# handler on import.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "MLFLOW_CONFIGURE_LOGGING": "false"}


class _LoggedStream:
    """A text stream whose lines become log records (a file object would be closed under it: Prefect's
    logging setup closes every handler's stream once)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        if text.strip():
            self.logger.info(text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


def report(log_file: Path) -> None:
    """Where the libraries' messages went: the last line of a finished run's report."""
    print(f"log:         {log_file}")
