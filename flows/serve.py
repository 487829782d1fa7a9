"""`alignflow serve` / `make serve`: the flows as Prefect deployments, with schedules and concurrency limits.

What is served is listed in ``deployments/deployments.yaml``: each entry
names a recipe (which decides the flow), its default overrides, and
optionally a cron schedule; with ``every_method`` (the default), every method
in the registry is also served on demand as ``default``, with its example
recipe. Runs execute in this process's children, against
the Prefect server in PREFECT_API_URL (by default the one `alignflow ui`
starts), and stop when this command stops.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.orchestration import get_client
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.local_api import UI_URL
from methods import METHODS
from methods.recipe import load_recipe
from pipeline_lib.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO / "deployments" / "deployments.yaml"


class DeploymentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    recipe: str
    overrides: list[str] = []
    cron: str | None = None
    timezone: str = "UTC"
    description: str | None = None
    tags: list[str] = []


class ServeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=2, ge=1)
    concurrency: dict[str, int] = {}
    every_method: bool = True
    deployments: list[DeploymentEntry] = []


def load_serve_file(path: str | Path) -> ServeFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read deployments file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise UserError(f"{path} is not valid YAML: {problem}{where}") from None
    try:
        return ServeFile.model_validate(raw or {})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"{path}: {where}: {first['msg']}") from None


def build_deployments(spec: ServeFile, base: Path = REPO) -> list:
    """Each entry as a deployment of its recipe's flow; a recipe that does not validate stops here, not at 2 a.m."""
    return [
        METHODS[recipe.method].load_flow().to_deployment(**deployment_options(entry, path, recipe))
        for entry, path, recipe in _entries(spec, base)
    ]


def deployment_options(entry: DeploymentEntry, path: Path, recipe: Any) -> dict[str, Any]:
    """What a served deployment is made of; `alignflow deploy` registers the same on a work pool (flows.deploy)."""
    return dict(
        name=entry.name,
        parameters={"recipe": str(path), "overrides": entry.overrides},
        schedules=[Cron(entry.cron, timezone=entry.timezone)] if entry.cron else None,
        description=entry.description or f"{recipe.method}: {entry.recipe} {' '.join(entry.overrides)}".strip(),
        tags=["alignflow", recipe.method, *entry.tags],
    )


def _entries(spec: ServeFile, base: Path) -> list[tuple[DeploymentEntry, Path, Any]]:
    """(entry, recipe path, parsed recipe): the file's entries, then each registered method's ``default``
    one (its example recipe) unless the file names that deployment already."""
    entries = [(entry, (base / entry.recipe).resolve()) for entry in spec.deployments]
    if spec.every_method:
        entries += [(DeploymentEntry(name="default", recipe=m.example_recipe), (base / m.example_recipe).resolve())
                    for m in METHODS.values()]  # fmt: skip
    parsed, seen = [], set()
    for entry, path in entries:
        recipe = load_recipe(str(path), entry.overrides)
        if (recipe.method, entry.name) not in seen:
            seen.add((recipe.method, entry.name))
            parsed.append((entry, path, recipe))
    if not parsed:
        raise UserError("the deployments file serves nothing: add deployments or leave every_method on")
    return parsed


def apply_concurrency_limits(limits: dict[str, int]) -> None:
    """Tag limits as Prefect's global concurrency limits ``tag:<tag>``, which every task run with that tag takes a slot of."""
    with get_client(sync_client=True) as client:
        for tag, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(f"tag:{tag}", limit)


def serve_deployments(path: str | Path = DEFAULT_FILE) -> int:
    spec = load_serve_file(path)
    _check_server()
    deployments = build_deployments(spec)
    apply_concurrency_limits(spec.concurrency)
    for tag, limit in spec.concurrency.items():
        print(f"concurrency: stages tagged {tag!r} run at most {limit} at a time")
    serve(*deployments, limit=spec.limit)
    return 0


def _check_server(purpose: str = "serve to") -> None:
    url = PREFECT_API_URL.value()
    if not url:
        raise UserError(
            f"no Prefect server to {purpose}: start one with `alignflow ui` (or `make ui`), "
            f"then `export PREFECT_API_URL={UI_URL}/api`"
        )
    try:
        urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5).close()
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"the Prefect server at {url} is not reachable ({error}); is `alignflow ui` running?") from None
