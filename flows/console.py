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
from pathlib import Path

from pipeline_lib.core.home import alignflow_home

# The loggers of the libraries whose console output tells a user nothing (their weights load, a
# deprecation, a generation flag): the log file gets them.
LIBRARY_LOGGERS = (
    "transformers", "datasets", "huggingface_hub", "accelerate", "trl", "peft", "torch", "httpx", "urllib3",
    "filelock", "mlflow", "alembic", "lm_eval", "ray",
)  # fmt: skip


def quiet_libraries(command: str) -> Path:
    """Send libraries' bars, log records and warnings to a new log file under $ALIGNFLOW_HOME/logs; return it."""
    os.environ["TQDM_DISABLE"] = "1"  # inherited by children too: a launched training worker
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    folder = alignflow_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / f"{command}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    # transformers gives its root logger a console handler and a level of its own the first time it logs:
    # let it do so now, so that what follows replaces them.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in (*LIBRARY_LOGGERS, "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    # Levels stay as the libraries set them (warnings and worse), except MLflow's notes, which it would
    # print: raising torch's would log its exit-time statistics into a file already closed.
    logging.getLogger("mlflow").setLevel(logging.INFO)
    # MLflow would otherwise give its logger a console handler on import, and it prints some notes
    # ("Successfully registered model") straight to its stream.
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    from mlflow.utils import logging_utils as mlflow_logging

    mlflow_logging.MLFLOW_LOGGING_STREAM = _LoggedStream(logging.getLogger("mlflow"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return log_file


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
