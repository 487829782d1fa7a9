"""Keep ``datasets`` silent while it reads a source: no progress bars, no log lines.

A load reports one summary line, and a failed load one ``UserError`` line; the
library's own bars and messages (such as "Failed to load JSON from file ...",
printed just before it raises) would only repeat or clutter those.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import datasets

_LOGGER = logging.getLogger("datasets")
_SILENT = logging.CRITICAL + 1

# Both settings are global to the process, so loads that overlap (threads) share
# one silence: the first to start saves the user's settings, the last to end restores them.
_lock = threading.Lock()
_active = 0
_saved_level = logging.NOTSET
_bars_were_on = False


@contextmanager
def quiet_datasets() -> Iterator[None]:
    global _active, _saved_level, _bars_were_on
    with _lock:
        if _active == 0:
            _saved_level, _bars_were_on = _LOGGER.level, datasets.is_progress_bar_enabled()
            _LOGGER.setLevel(_SILENT)
            if _bars_were_on:
                datasets.disable_progress_bars()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _LOGGER.setLevel(_saved_level)
                if _bars_were_on:
                    datasets.enable_progress_bars()
