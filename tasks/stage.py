"""How every pipeline stage becomes a cached, resumable Prefect task.

A stage's key is ``store.cache_key`` of its name and version, the hash of the
config it reads, and the digests of its inputs. Its output lives in the
key-addressed ``store.stage_dir``, so the key alone says where the output
is: a retry, a rerun, and another run with the same inputs all find it, and
the run folder only links to it. Prefect caches on the same key; the folder's
manifest stays the ground truth, so a deleted output is rebuilt, not trusted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.runtime import task_run
from pydantic_core import to_jsonable_python

from pipeline_lib.config import hash_json
from pipeline_lib.store import build_stage, cache_key, digest_path, is_complete, link, stage_dir
from tasks.settings import cache_key_storage


class StageKey(CachePolicy):
    """Cache on the precomputed stage key; never on the flow-run id or the output path."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str | None:
        return inputs.get("key")


def stage_task(
    name: str, *, version: int = 1, tags: tuple[str, ...] = (), retries: int = 0, **options: Any
) -> Callable[[Callable], Task]:
    """Declare a stage. Bump ``version`` when its code changes what it writes, so old outputs are not reused."""
    return task(
        name=name,
        version=str(version),
        cache_policy=StageKey().configure(key_storage=cache_key_storage()),
        persist_result=True,
        tags=list(tags),
        retries=retries,
        **options,
    )


def run_stage(
    stage: Task,
    *,
    config: Any,
    inputs: Mapping[str, str | Path],
    link_as: Path,
    force: bool | Callable[[str], bool] = False,
    **params: Any,
) -> str:
    """Run (or reuse) a stage and link its output into the run folder at ``link_as``; return the output folder.

    ``config`` is what the stage reads from the recipe (hashed into the key);
    ``inputs`` are the files or folders it reads (their digests go into the key);
    ``force`` is a flag or the flow's ``StageForcing``.
    """
    if callable(force):
        force = force(stage.name)
    key = cache_key(
        f"{stage.name}@v{stage.version}",
        hash_json(to_jsonable_python(config)),
        {name: digest_path(path) for name, path in inputs.items()},
    )
    out_dir = stage_dir(stage.name, key)
    refresh = force or not is_complete(out_dir, key)
    status = "forced" if force else "running" if refresh else "reusing finished output"
    # stderr, not Prefect's logger: the console shows WARNING and above only,
    # and the UI already shows each stage's state (Cached / Completed).
    print(f"stage {stage.name} ({link_as.parent.name}/{link_as.name}): {status}", file=sys.stderr, flush=True)
    # Named by where it runs, so the UI tells round 1's training from round 2's.
    run_name = f"{stage.name}/{link_as.parent.name}"
    stage.with_options(refresh_cache=refresh, task_run_name=run_name)(
        out_dir=str(out_dir), key=key, force=force, **params
    )
    link(link_as, out_dir)
    # The folder is a function of the key; a cached return value from another
    # time can never point anywhere else.
    return str(out_dir)


def build_with_shards(out_dir: str, stage: str, key: str, build: Callable[[Path, Path], dict], force: bool) -> str:
    """``build_stage`` for generation stages: ``build(tmp, shards)`` keeps finished shards in a
    ``<key>.partial`` folder beside the output, so a killed run resumes mid-stage."""
    out = Path(out_dir)
    shards = out.with_name(out.name + ".partial")
    return str(build_stage(out, stage, key, lambda tmp: build(tmp, shards), force=force, scratch=shards))


def running_stage() -> str:
    """The name of the stage running now; one body may serve several (``task.with_options(name=...)``),
    and manifests and failure injection must name the one that runs."""
    return task_run.task_name or "unnamed-stage"
