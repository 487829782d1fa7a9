"""Model provisioning: a reference in, a local folder out (pulled on first use); a chat template set on it."""

from pathlib import Path

from prefect import task

from pipeline_lib.models import resolve_model
from pipeline_lib.models.chat_template import write_with_template
from tasks.limits import limited
from tasks.stage import Input, stage


@limited("io")
@task(name="provision-model")
def provision_model(ref: str) -> str:
    return str(resolve_model(ref))


@stage("set-chat-template", tags=("io",))
def set_chat_template(tmp: Path, model: Input, template: str) -> dict:
    """``model`` with ``template`` as its chat template (``model.chat_template``); the weights are linked, not copied."""
    return write_with_template(Path(model), template, tmp)
