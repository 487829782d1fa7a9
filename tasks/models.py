"""Model provisioning as a task: a reference in, a local folder out (pulled on first use)."""

from prefect import task

from pipeline_lib.models import resolve_model


@task(name="provision-model", tags=["io"])
def provision_model(ref: str) -> str:
    return str(resolve_model(ref))
