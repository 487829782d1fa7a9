"""How every pipeline stage becomes a cached, resumable Prefect task.

A stage's key is ``store.cache_key`` of its name and version, the hash of the
config it reads, and the digests of its inputs. Its output lives in the
key-addressed ``store.stage_dir``, so the key alone says where the output
is: a retry, a rerun, and another run with the same inputs all find it, and
the run folder only links to it. Prefect caches on the same key; the folder's
manifest stays the ground truth, so a deleted output is rebuilt, not trusted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.runtime import task_run
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from pydantic_core import to_jsonable_python

from pipeline_lib import interrupts
from pipeline_lib.config import hash_json
from pipeline_lib.errors import UserError
from pipeline_lib.store import (
    MANIFEST,
    build_stage,
    cache_key,
    content_matches,
    digest_path,
    invalidate,
    link,
    owning_stage_folder,
    read_manifest,
    stage_dir,
    stage_problem,
    writer_busy,
)
from tasks.settings import cache_key_storage

VERIFY_ENV = "ALIGNFLOW_VERIFY"


class StageKey(CachePolicy):
    """Cache on the precomputed stage key; never on the flow-run id or the output path."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str | None:
        key = inputs.get("key")
        if key:
            _drop_stale_record(key)
        return key


def _drop_stale_record(key: str) -> None:
    """Forget Prefect's cache record of ``key`` if it cannot be read back here.

    Records hold the absolute path of their result, so a home that was moved,
    restored or mounted elsewhere has records Prefect refuses ("outside of the
    base path"). The stage folder is the ground truth; a record is only a
    shortcut, and a stale one must cost a rerun of the stage body, never the run.
    """
    record = Path(cache_key_storage()) / key
    try:
        stored = Path(json.loads(record.read_text())["storage_key"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        record.unlink(missing_ok=True)
        return
    results = Path(PREFECT_LOCAL_STORAGE_PATH.value()).resolve()
    if not stored.is_relative_to(results) or not stored.is_file():
        record.unlink(missing_ok=True)


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
    interrupts.check()  # a ctrl-C swallowed since the last stage stops the run here
    if callable(force):
        force = force(stage.name)
    key = cache_key(
        f"{stage.name}@v{stage.version}",
        hash_json(to_jsonable_python(config)),
        {name: digest_path(path) for name, path in inputs.items()},
    )
    out_dir = stage_dir(stage.name, key)
    where = f"{link_as.parent.name}/{link_as.name}"
    problem = None if force else stage_problem(out_dir, key, full=verify_requested())
    rebuild = problem is not None and out_dir.exists()
    waits = problem is not None and not rebuild and writer_busy(out_dir)
    refresh = force or problem is not None
    status = (
        "forced" if force
        else f"rebuilding: the finished output failed verification ({problem})" if rebuild
        else "waiting for another run building it" if waits
        else "running" if refresh
        else "reusing finished output"
    )  # fmt: skip
    # stderr, not Prefect's logger: the console shows WARNING and above only,
    # and the UI already shows each stage's state (Cached / Completed).
    _say(stage.name, where, status)
    # Named by where it runs, so the UI tells round 1's training from round 2's.
    run_name = f"{stage.name}/{link_as.parent.name}"
    if refresh:
        _check_inputs(stage.name, inputs)
    called = time.time()
    stage.with_options(refresh_cache=refresh, task_run_name=run_name)(
        out_dir=str(out_dir), key=key, force=force or rebuild, **params
    )
    manifest = read_manifest(out_dir) or {}
    if waits and manifest.get("started_at", called) < called:
        _say(stage.name, where, "reusing the output the other run built")
    if manifest.get("skipped_rows"):
        counts = ", ".join(f"{reason}: {n}" for reason, n in manifest["skipped_rows"].items())
        _say(stage.name, where, f"skipped {sum(manifest['skipped_rows'].values())} rows ({counts}); see {out_dir / MANIFEST}")
    link(link_as, out_dir)
    interrupts.check()
    # The folder is a function of the key; a cached return value from another
    # time can never point anywhere else.
    return str(out_dir)


def _say(stage: str, where: str, what: str) -> None:
    print(f"stage {stage} ({where}): {what}", file=sys.stderr, flush=True)


def verify_requested() -> bool:
    """``alignflow run --verify``: compare every reused output's content digest, not only its file sizes."""
    return os.environ.get(VERIFY_ENV, "") not in ("", "0")


def _check_inputs(stage: str, inputs: Mapping[str, str | Path]) -> None:
    """Refuse to build on another stage's output whose content no longer matches its digest.

    Such an input would fail deep inside the stage (or, worse, be read as it
    is); instead it is marked for rebuilding and the run stops with one line.
    The digest is remembered per file state, so this hashes each output once.
    """
    for name, path in inputs.items():
        folder = owning_stage_folder(Path(path))
        if folder is not None and not content_matches(folder):
            invalidate(folder)
            raise UserError(
                f"stage {stage} cannot read its input {name!r}: the output of stage {folder.parent.name} at {folder} "
                "is corrupt (its content no longer matches its digest); it is marked for rebuilding: rerun the same command"
            )


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
