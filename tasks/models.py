"""Model provisioning as a task: a reference in, a local folder and its digest out."""

from prefect import task

from pipeline_lib.models import resolve_model
from pipeline_lib.store import digest_path


@task(name="provision-model", tags=["io"])
def provision_model(ref: str) -> dict[str, str]:
    path = resolve_model(ref)
    return {"path": str(path), "digest": digest_path(path)}
