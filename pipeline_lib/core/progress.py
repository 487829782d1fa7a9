"""One progress display per stage: what it is doing, how much of it is done, and an ETA.

A stage runs inside ``stage_display``. The code that knows how much work a
phase holds (a sharded sampling loop, a trainer, a judging loop) opens it with
``phase``; the code doing the work reports what it finished with ``advance``.
Outside a stage both do nothing, so library use (bench scripts, tests) draws
no bar. Worker threads see the display of the stage that started them only
through ``carry_display``: a context variable does not cross into a thread
pool by itself.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class Display:
    """A stage's bar, replaced by each new phase."""

    def __init__(self, label: str) -> None:
        self.label, self.what = label, ""
        self.bar: tqdm | None = None

    def phase(self, what: str, total: int, done: int = 0, unit: str = "row") -> None:
        if self.bar is not None and self.what == what:
            # More of the same work (MT-Bench samples each category and turn apart): one bar grows.
            self.bar.total += total
            self.bar.update(done)
            self.bar.refresh()
            return
        self.close()
        self.what = what
        # disable=False explicitly: the CLI turns library bars off with TQDM_DISABLE, which sets only the default.
        self.bar = tqdm(
            total=total, initial=done, desc=f"{self.label}: {what}", unit=unit, disable=False, dynamic_ncols=True,
            file=sys.stderr,
        )  # fmt: skip

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def note(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_DISPLAY: contextvars.ContextVar[Display | None] = contextvars.ContextVar("alignflow_stage_display", default=None)
_MUTED: contextvars.ContextVar[bool] = contextvars.ContextVar("alignflow_progress_muted", default=False)


@contextmanager
def stage_display(label: str) -> Iterator[Display]:
    display = Display(label)
    token = _DISPLAY.set(display)
    try:
        yield display
    finally:
        display.close()
        _DISPLAY.reset(token)


def phase(what: str, total: int, done: int = 0, unit: str = "row") -> None:
    display = _DISPLAY.get()
    if display is not None:
        display.phase(what, total, done, unit)


def advance(count: int = 1) -> None:
    display = _DISPLAY.get()
    if display is not None and not _MUTED.get():
        display.advance(count)


@contextmanager
def counted_by_caller() -> Iterator[None]:
    """Nested ``advance`` calls count nothing: the caller counts this work in its own units (a judging shard
    counts judgments, not the rows its judge samples)."""
    token = _MUTED.set(True)
    try:
        yield
    finally:
        _MUTED.reset(token)


def note(**values: Any) -> None:
    display = _DISPLAY.get()
    if display is not None:
        display.note(**values)


def carry_display(work: Callable[..., T]) -> Callable[..., T]:
    """``work`` run with this thread's display, for submitting to a thread pool."""
    display, muted = _DISPLAY.get(), _MUTED.get()

    def run(*args: Any, **kwargs: Any) -> T:
        tokens = _DISPLAY.set(display), _MUTED.set(muted)
        try:
            return work(*args, **kwargs)
        finally:
            _DISPLAY.reset(tokens[0])
            _MUTED.reset(tokens[1])

    return run
