"""A ctrl-C that cannot be lost.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main
thread happens to be. Where it lands, it can be swallowed: in a ``__del__``
(asyncio's ``_SelectorTransport.__del__`` prints "Exception ignored ... KeyboardInterrupt"
and goes on), a weakref or GC callback, or Prefect's engine once a run's state
is final. The run then carries on as if nothing had happened.

So ``sticky_interrupts`` (entered by `alignflow run` / `compare-methods`)
installs a SIGINT handler that *records* the interrupt before raising, and
the pipeline calls ``check`` at safe points (each stage boundary, each
training step, each sampling shard, a flow's last step, and once more when
the flow has returned), which raises ``KeyboardInterrupt`` again while one is recorded. A swallowed
interrupt therefore stops the run at the next of those points.

A SIGINT that comes within ``REPEAT_AFTER_S`` of the last one raised is only
recorded: mashing ctrl-C must not cut short what the first one started
(Prefect recording the run as Crashed, servers being stopped). A later one
raises again, for a run whose interrupt was swallowed far from any checkpoint.

No Prefect or torch import here: it is read before either is loaded.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Long enough for Prefect to record a run as Crashed on a loaded 2-core machine (at 1 s, a ctrl-C pressed
# repeatedly cut that short in CI and left the run Running).
REPEAT_AFTER_S = 3.0

_requested = threading.Event()
_last_raised = float("-inf")


def interrupted() -> bool:
    """Whether a ctrl-C has been recorded since the current ``sticky_interrupts`` block began."""
    return _requested.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a ctrl-C has been recorded: call at points where stopping is safe."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    global _last_raised
    _requested.set()
    now = time.monotonic()
    if now - _last_raised >= REPEAT_AFTER_S:
        _last_raised = now
        raise KeyboardInterrupt


def _quiet_lost_interrupts(previous):
    """An ``unraisablehook`` that records a ``KeyboardInterrupt`` lost in a ``__del__`` or callback, without
    the traceback Python would print; every other unraisable exception goes to ``previous``."""

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _requested.set()
            return
        previous(unraisable)

    return hook


@contextmanager
def sticky_interrupts() -> Iterator[None]:
    """Within this block, a ctrl-C is recorded as well as raised, so that ``check`` raises it again;
    an error that leaves the block after one is reported as the interrupt.

    Only the main thread can handle signals; elsewhere, and where SIGINT is
    ignored (a command a shell started in the background), SIGINT is left as
    it is and ``check`` only sees interrupts lost in ``__del__`` methods.
    """
    global _last_raised
    _requested.clear()
    _last_raised = float("-inf")
    installed = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) not in (
        signal.SIG_IGN,
        None,  # a handler installed from C: not ours to replace
    )
    previous_handler = signal.signal(signal.SIGINT, _on_sigint) if installed else None
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_lost_interrupts(previous_hook)
    try:
        yield
    except Exception as error:
        if _requested.is_set():
            # The interrupt in another guise: some libraries turn a KeyboardInterrupt
            # into their own error (pydantic-core: PydanticSerializationError).
            raise KeyboardInterrupt from error
        raise
    finally:
        sys.unraisablehook = previous_hook
        if installed:
            signal.signal(signal.SIGINT, previous_handler)
        _requested.clear()
