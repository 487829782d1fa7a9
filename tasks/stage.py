"""How every pipeline stage becomes a cached, resumable Prefect task.

A stage is a function ``body(tmp, **args) -> manifest fields`` declared with
``@stage``. Its parameters are the one description of what it reads: the key
is hashed from exactly the arguments the body receives, so a call site cannot
key one thing and pass another. Parameters typed ``Input`` are files or
folders, keyed by their content digest; ``Neutral`` ones (how to reach a
server, a batch size) cannot change the output and stay out of the key;
``KeyedAs`` keys the part of a value the stage reads.

The output lives in the key-addressed ``store.stage_dir``, so the key alone
says where it is: a retry, a rerun and another run with the same inputs all
find it, and the run folder only links to it. Prefect caches on the same key;
the folder's manifest stays the ground truth, so a deleted output is rebuilt,
not trusted.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from pydantic_core import to_jsonable_python

from pipeline_lib.core import interrupts
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.hashing import hash_json
from pipeline_lib.core.progress import stage_display
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
    source_digest,
    stage_dir,
    stage_problem,
    writer_busy,
)
from tasks.limits import limited_tags
from tasks.settings import cache_key_storage

VERIFY_ENV = "ALIGNFLOW_VERIFY"

_INPUT, _NEUTRAL = "input", "neutral"
Input = Annotated[str, _INPUT]
"""A file or folder the stage reads; its content digest keys the stage."""
OptionalInput = Annotated["str | None", _INPUT]
InputMap = Annotated["dict[str, str]", _INPUT]
"""Named files or folders the stage reads, each keyed by its content digest."""


def Neutral(kind: Any) -> Any:  # noqa: N802 - reads as a type in signatures
    """A parameter that cannot change the output (a server to reach, a batch size): left out of the key."""
    return Annotated[kind, _NEUTRAL]


@dataclass(frozen=True)
class KeyedAs:
    """Key the part of a parameter the stage reads, e.g. a config without the sections it ignores."""

    narrow: Callable[[Any], Any]


def KeyedBy(kind: Any, narrow: Callable[[Any], Any]) -> Any:  # noqa: N802
    return Annotated[kind, KeyedAs(narrow)]


# Every declared stage by name, for --from-stage and the docs. One name may have
# several bodies (each method builds its own training rows); they share the name.
DECLARED: dict[str, list[Stage]] = {}


@dataclass(frozen=True)
class Param:
    role: str  # "input", "neutral" or "config"
    narrow: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Stage:
    """A declared stage: its name, version, code digest, body and the roles of the body's parameters."""

    name: str
    body: Callable[..., Mapping[str, Any] | None]
    version: int = 1
    code: tuple[ModuleType, ...] = ()
    scratch: str | None = None
    tags: tuple[str, ...] = ()
    params: Mapping[str, Param] = field(default_factory=dict)
    task: Task | None = None
    # What one run of the stage needs of a cluster node (Ray's num_cpus, num_gpus); only Ray reads it.
    resources: Mapping[str, float] = field(default_factory=dict)

    def named(self, name: str) -> Stage:
        """The same body under another name (the policy's samples run generate-answers' body)."""
        return _declare(dataclasses.replace(self, name=name, task=None))

    def key_parts(self, args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """(config hashed into the key, inputs digested into it): every parameter but the neutral ones."""
        config: dict[str, Any] = {}
        inputs: dict[str, str] = {}
        for name, param in self.params.items():
            value = args[name]
            if param.role == _INPUT:
                if isinstance(value, Mapping):
                    # Several inputs under one parameter (the evaluation sets to decontaminate against).
                    inputs.update({f"{name}.{part}": str(path) for part, path in value.items()})
                elif value is not None:
                    inputs[name] = str(value)
            elif param.role != _NEUTRAL:
                config[name] = param.narrow(value) if param.narrow else value
        if self.code:
            config["code"] = source_digest(*self.code)
        return config, inputs

    def key(self, args: Mapping[str, Any]) -> str:
        return self._key(*self.key_parts(args))

    def _key(self, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
        return cache_key(
            f"{self.name}@v{self.version}",
            hash_json(to_jsonable_python(config)),
            {name: digest_path(path) for name, path in inputs.items()},
        )

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value, defaults filled in; a missing or unknown one is a programming error."""
        signature = inspect.signature(self.body)
        bound = signature.bind(None, **({"scratch": None} if self.scratch else {}), **args)
        bound.apply_defaults()
        return {name: value for name, value in bound.arguments.items() if name in self.params}

    def run(self, link_as: Path, force: bool | Callable[[str], bool] = False, **args: Any) -> str:
        """Run (or reuse) the stage and link its output into the run folder at ``link_as``; return the output folder.

        ``force`` is a flag or the run's ``StageForcing``.
        """
        interrupts.check()  # a ctrl-C swallowed since the last stage stops the run here
        if callable(force):
            force = force(self.name)
        args = self.bind(args)
        # Once per call: a code-keyed stage's parts include the digest of its modules' source.
        config, inputs = self.key_parts(args)
        key = self._key(config, inputs)
        out_dir = stage_dir(self.name, key)
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
        _say(self.name, where, status)
        if refresh:
            _check_inputs(self.name, inputs)
        called = time.time()
        # Named by where it runs, so the UI tells round 1's training from round 2's.
        assert self.task is not None
        with stage_display(f"{self.name} ({where})"):
            self.task.with_options(
                refresh_cache=refresh, task_run_name=f"{self.name}/{link_as.parent.name}", tags=limited_tags(self.tags)
            )(out_dir=str(out_dir), key=key, force=force or rebuild, args=args)
        manifest = read_manifest(out_dir) or {}
        if waits and manifest.get("started_at", called) < called:
            _say(self.name, where, "reusing the output the other run built")
        if manifest.get("skipped_rows"):
            counts = ", ".join(f"{reason}: {n}" for reason, n in manifest["skipped_rows"].items())
            _say(self.name, where, f"skipped {sum(manifest['skipped_rows'].values())} rows ({counts}); see {out_dir / MANIFEST}")
        link(link_as, out_dir)
        interrupts.check()
        # The folder is a function of the key; a cached return value from another
        # time can never point anywhere else.
        return str(out_dir)

    def build(self, out_dir: str, key: str, force: bool, args: Mapping[str, Any]) -> str:
        """The task's body: build the key's folder atomically (or find it built)."""
        out = Path(out_dir)
        scratch = out.with_name(f"{out.name}.{self.scratch}") if self.scratch else None
        if force and scratch is not None:
            # Forced means recomputed: progress kept from an earlier attempt is not reused.
            shutil.rmtree(scratch, ignore_errors=True)
        extra = {"scratch": scratch} if scratch is not None else {}
        inputs = self.key_parts(args)[1]

        def fill(tmp: Path) -> Mapping[str, Any] | None:
            return self.body(tmp, **extra, **args)

        return str(build_stage(out, self.name, key, fill, inputs=inputs, force=force, scratch=scratch))


def stage(
    name: str,
    *,
    version: int = 1,
    code: tuple[ModuleType, ...] = (),
    scratch: str | None = None,
    tags: tuple[str, ...] = (),
    resources: Mapping[str, float] | None = None,
) -> Callable[[Callable[..., Mapping[str, Any] | None]], Stage]:
    """Declare a stage whose body is ``body(tmp, [scratch,] **args)``.

    ``version``: bump it when the body's code changes what it writes (expensive
    stages: generation, training), so old outputs are not reused. ``code``:
    modules whose source digest keys the stage instead (cheap stages that are
    a pure function of code, such as generating and grading the suite).
    ``scratch``: a suffix; the body gets a folder beside the output that keeps
    progress across attempts (sampling shards, the trainer's checkpoints).
    ``resources``: what one run needs of a node, as Ray's remote options
    (``{"num_cpus": 1, "num_gpus": 1}``); by default one CPU, and one GPU for
    a stage tagged ``accelerator``. Only a Ray task runner reads them
    (``methods.orchestration``), and it asks for GPUs only where the cluster has some.
    """
    needs = dict(resources) if resources is not None else default_resources(tags)

    def declare(body: Callable[..., Mapping[str, Any] | None]) -> Stage:
        return _declare(Stage(name, body, version, tuple(code), scratch, tuple(tags), _params(body, scratch), None, needs))

    return declare


def default_resources(tags: tuple[str, ...]) -> dict[str, float]:
    """One CPU; one GPU as well for a stage tagged ``accelerator`` (generation, training, CEL play)."""
    return {"num_cpus": 1, "num_gpus": 1} if "accelerator" in tags else {"num_cpus": 1}


def declared_resources(stages: Iterable[Stage] | None = None) -> dict[str, float]:
    """The most any one of ``stages`` (default: every declared stage) asks for, per resource.

    Work that runs several stages one after another in one Ray task (a
    compare-methods contestant) holds this much for its whole run.
    """
    stages = [s for group in DECLARED.values() for s in group] if stages is None else list(stages)
    needs: dict[str, float] = {}
    for declared in stages:
        for name, amount in declared.resources.items():
            needs[name] = max(needs.get(name, 0), amount)
    return needs


def _params(body: Callable, scratch: str | None) -> dict[str, Param]:
    hints = get_type_hints(body, include_extras=True)
    names = list(inspect.signature(body).parameters)[1:]  # after tmp
    if scratch:
        if names[:1] != ["scratch"]:
            raise TypeError(f"{body.__qualname__}: a stage with scratch takes (tmp, scratch, ...)")
        names = names[1:]
    params = {}
    for name in names:
        hint = hints.get(name)
        extras = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
        role = _INPUT if _INPUT in extras else _NEUTRAL if _NEUTRAL in extras else "config"
        narrow = next((e.narrow for e in extras if isinstance(e, KeyedAs)), None)
        params[name] = Param(role, narrow)
    return params


def _declare(declared: Stage) -> Stage:
    prefect_task = task(
        declared.build,
        name=declared.name,
        version=str(declared.version),
        cache_policy=StageKey().configure(key_storage=cache_key_storage()),
        persist_result=True,
        # No tags of its own: Prefect would keep them on every run. Stage.run gives a run those with a limit.
    )
    declared = dataclasses.replace(declared, task=prefect_task)
    DECLARED.setdefault(declared.name, []).append(declared)
    return declared


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
