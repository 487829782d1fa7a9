"""A task run carries only those of its task's tags that name a concurrency limit.

Before a task run starts, Prefect asks the API for a slot of the global limit ``tag:<tag>`` for each of its
tags, whether or not such a limit exists. A busy local server answers in up to a few seconds: leaving off
the tags without a limit took a ``seft-tiny`` run from 117 s to 79 s (BENCHMARKS.md). The tags stay declared
(``@stage(tags=...)``, ``@limited(tag) @task(...)``), not given to the Prefect task: Prefect would keep a
task's own tags on every run. Which of them have a limit is read from the API once per flow run
(``alignflow serve`` and ``deploy`` create theirs before any run starts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from prefect import Task
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL

PAGE = 200
# (API, flow run) and the tags with a limit there: one flow run at a time per process.
_latest: tuple[tuple[Any, ...], frozenset[str]] | None = None


def limited_tags(tags: Iterable[str]) -> list[str]:
    """The tags that name a concurrency limit (``tag:<tag>``) on the API this flow run reports to."""
    global _latest
    tags = list(tags)
    if not tags:
        return []
    context = FlowRunContext.get()
    key = (PREFECT_API_URL.value(), context.flow_run.id if context and context.flow_run else None)
    if _latest is None or _latest[0] != key:
        _latest = (key, _tag_limits())
    return [tag for tag in tags if tag in _latest[1]]


def _tag_limits() -> frozenset[str]:
    names: set[str] = set()
    with get_client(sync_client=True) as client:
        for offset in range(0, 1_000_000, PAGE):
            page = client.read_global_concurrency_limits(limit=PAGE, offset=offset)
            names.update(limit.name.removeprefix("tag:") for limit in page if limit.name.startswith("tag:"))
            if len(page) < PAGE:
                break
    return frozenset(names)


def limited(*tags: str) -> Callable[[Task], Callable[..., Any]]:
    """Declare a Prefect task's tags (the task itself has none): each call carries those that name a limit."""

    def wrap(declared: Task) -> Callable[..., Any]:
        @functools.wraps(declared.fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return declared.with_options(tags=limited_tags(tags))(*args, **kwargs)

        return call

    return wrap
