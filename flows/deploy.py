"""`alignflow deploy`: the deployments `alignflow serve` serves, registered on a Prefect work pool.

`alignflow serve` runs every flow run in its own children, on one machine.
`alignflow deploy --pool NAME` registers the same deployments (the same
entries of ``deployments/deployments.yaml``, schedules, tags, tag concurrency
limits, flows from the method registry and parameters) as deployments of the
work pool NAME, and returns: any number of ``prefect worker start --pool
NAME`` processes, on any machines that reach the Prefect API, then run them.

Each deployment's code is found on the worker as Prefect's local storage
describes it: a pull step enters ``--code-dir`` and the flow is loaded from
its registry entrypoint there (``methods/seft/flow.py:seft_flow``); recipe
paths are rewritten to the same folder. By default that is this checkout's
path, so a process worker needs the repository at the same path (a shared or
identical checkout); for a Kubernetes pool it is where the image holds it.
What else the workers must share is in docs/scaling.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import DeploymentApplyError
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.runner.storage import LocalStorage

from flows.serve import (
    DEFAULT_FILE,
    REPO,
    ServeFile,
    _check_server,
    _entries,
    apply_concurrency_limits,
    deployment_options,
    load_serve_file,
)
from methods import METHODS
from pipeline_lib.core.errors import UserError

POOL_TYPES = ("process", "kubernetes")
KUBERNETES_TEMPLATE = REPO / "deployments" / "kubernetes" / "base-job-template.json"


def pool_deployments(
    spec: ServeFile, pool: str, code_dir: Path = REPO, home: Path | None = None, base: Path = REPO
) -> list:
    """Each entry of the deployments file as a deployment of ``pool``, run from ``code_dir`` on the workers.

    The options are `alignflow serve`'s (``deployment_options``); only where the code is differs: a
    pull step that enters ``code_dir``, the entrypoint relative to it, and recipe paths under it.
    The flow run's environment gets the Prefect settings `alignflow` gives its own flow runs
    (``flow_run_env``): a worker started with plain ``prefect worker start`` has none of them.
    """
    deployments = []
    for entry, path, recipe in _entries(spec, base):
        method = METHODS[recipe.method]
        options = deployment_options(entry, path, recipe)
        options["parameters"]["recipe"] = str(_on_workers(path, code_dir, base))
        deployment = method.load_flow().to_deployment(
            **options, work_pool_name=pool, job_variables={"env": flow_run_env(home)}
        )
        # What flow.from_source(code_dir, entrypoint) would make, without importing the flow from
        # code_dir here (in an image, that folder is not on this machine).
        deployment.storage = LocalStorage(str(code_dir))
        deployment.entrypoint = method.flow_entrypoint
        deployments.append(deployment)
    return deployments


def flow_run_env(home: Path | None) -> dict[str, str]:
    """Settings of a flow run on a worker. Stages and round subflows persist their results (a retried
    run reattaches finished rounds through them); with ``home``, the shared ALIGNFLOW_HOME on the workers,
    the results go there too, as `alignflow run` and `alignflow serve` keep them (tasks/settings.py)."""
    env = {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
    if home is not None:
        env.update(
            ALIGNFLOW_HOME=str(home),
            PREFECT_HOME=str(home / "prefect"),
            PREFECT_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"),
        )
    return env


def _on_workers(path: Path, code_dir: Path, base: Path) -> Path:
    """A recipe's path on the workers: under ``code_dir`` when it is in this checkout, else as given."""
    try:
        return code_dir / path.relative_to(base.resolve())
    except ValueError:
        return path


def deploy_to_pool(
    pool: str,
    path: str | Path = DEFAULT_FILE,
    pool_type: str | None = None,
    image: str | None = None,
    code_dir: str | Path | None = None,
    home: str | Path | None = None,
) -> int:
    if pool_type is not None and pool_type not in POOL_TYPES:
        raise UserError(f"--pool-type must be one of {', '.join(POOL_TYPES)}, not {pool_type!r}")
    spec = load_serve_file(path)
    code = Path(code_dir) if code_dir else REPO
    if not code.is_absolute():
        raise UserError(f"--code-dir must be an absolute path on the workers, not {str(code)!r}")
    if home is not None and not Path(home).is_absolute():
        raise UserError(f"--home must be an absolute path on the workers, not {str(home)!r}")
    # Every recipe is validated before anything is registered.
    deployments = pool_deployments(spec, pool, code, Path(home) if home else None)
    _check_server("deploy to")
    try:
        work_pool, created = ensure_pool(pool, pool_type, image)
        apply_concurrency_limits(spec.concurrency)
        for deployment in deployments:
            deployment.apply(work_pool_name=pool, image=image)
    except (DeploymentApplyError, PrefectHTTPStatusError) as error:
        raise UserError(f"the Prefect API refused the deployments: {_one_line(error)}") from None
    except (httpx.HTTPError, OSError) as error:  # the server went away since the health check
        raise UserError(f"the Prefect API stopped answering: {_one_line(error)}") from None
    print(f"work pool {pool!r} ({work_pool.type}): {'created' if created else 'exists'}")
    for deployment in deployments:
        recipe = " ".join([deployment.parameters["recipe"], *deployment.parameters["overrides"]])
        print(f"deployed {deployment.flow_name}/{deployment.name}: {recipe}")
    for tag, limit in spec.concurrency.items():
        print(f"concurrency: stages tagged {tag!r} run at most {limit} at a time, across every worker")
    print(f"ALIGNFLOW_HOME: {home}" if home else "ALIGNFLOW_HOME: each worker's own (see --home)")
    if work_pool.type == "process":
        print(f"code: {code} on every worker; start workers there with its .venv's "
              f"`prefect worker start --pool {pool} --limit {spec.limit}`")  # fmt: skip
    else:
        print(f"code: {code} in {image or 'the pool image'}; start a {work_pool.type} worker for pool {pool!r}")
    return 0


def ensure_pool(name: str, pool_type: str | None, image: str | None = None) -> tuple[Any, bool]:
    """The work pool ``name`` (created, of ``pool_type`` or process, when missing), and whether it was created.

    Nothing is created when the deployments could not use the pool (an image for a process pool)."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            if pool_type and existing.type != pool_type:
                raise UserError(
                    f"work pool {name!r} exists with type {existing.type!r}, not {pool_type!r}: "
                    f"pick another --pool, or leave out --pool-type to deploy to it"
                )
            _check_image(name, existing.type, existing.base_job_template, image)
            return existing, False
        pool_type = pool_type or "process"
        template = base_job_template(pool_type)
        _check_image(name, pool_type, template, image)
        try:
            return client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template)), True
        except ObjectAlreadyExists:  # another deploy created it meanwhile
            return ensure_pool(name, pool_type, image)


def base_job_template(pool_type: str) -> dict[str, Any]:
    """A process pool gets Prefect's own template; a Kubernetes pool alignflow's (GPUs, the shared home)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    return json.loads(KUBERNETES_TEMPLATE.read_text())


def _check_image(pool: str, pool_type: str, template: dict[str, Any], image: str | None) -> None:
    image_variable = template.get("variables", {}).get("properties", {}).get("image")
    if image and image_variable is None:
        raise UserError(
            f"work pool {pool!r} ({pool_type}) runs flows in the worker's own environment, not in an image: "
            f"leave out --image"
        )
    if image_variable is not None and not image and not image_variable.get("default"):
        raise UserError(f"work pool {pool!r} ({pool_type}) runs flows in a container: give --image")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
