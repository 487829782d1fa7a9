"""How every pipeline stage becomes a cached, resumable Prefect task.

A stage task takes ``out_dir`` and ``key`` (from ``pipeline_lib.store.cache_key``)
among its parameters. Prefect caches on that key alone, so results are shared
across retries, reruns and new flow runs with the same inputs; the folder's
manifest is the ground truth, so a deleted output is rebuilt, not trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy

from pipeline_lib.store import is_complete
from tasks.settings import cache_key_storage


class StageKey(CachePolicy):
    """Cache on the precomputed stage key; never on the flow-run id or the output path."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str | None:
        return inputs.get("key")


def stage_task(name: str, *, tags: tuple[str, ...] = (), retries: int = 0, **options: Any) -> Callable[[Callable], Task]:
    return task(
        name=name,
        cache_policy=StageKey().configure(key_storage=cache_key_storage()),
        persist_result=True,
        tags=list(tags),
        retries=retries,
        **options,
    )


def run_stage(stage: Task, out_dir: Path, key: str, force: bool = False, **params: Any) -> Any:
    """Call a stage task, bypassing Prefect's cache when the output on disk is missing or forced."""
    refresh = force or not is_complete(Path(out_dir), key)
    where = f"{Path(out_dir).parent.name}/{Path(out_dir).name}"
    print(f"stage {stage.name} ({where}): {'forced' if force else 'running' if refresh else 'reusing finished output'}")
    return stage.with_options(refresh_cache=refresh)(out_dir=str(out_dir), key=key, force=force, **params)
