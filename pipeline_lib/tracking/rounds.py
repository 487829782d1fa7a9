"""A round's child run ``round-K``, logged once however often the run is resumed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pipeline_lib.core.hashing import hash_json
from pipeline_lib.store import digest_path
from pipeline_lib.tracking.lineage import log_trained_model
from pipeline_lib.tracking.metrics import log_metrics
from pipeline_lib.tracking.runs import find_child_run, start_child_run

TAG_OUTPUTS = "alignflow.outputs_digest"


def outputs_tag(outputs: list[str]) -> dict[str, str]:
    """The tag that names what a child run logged: the digests of the stage outputs it read."""
    return {TAG_OUTPUTS: hash_json([digest_path(d) for d in outputs])}


@contextmanager
def round_child_run(
    parent_run_id: str,
    round_index: int,
    outputs: list[str],
    metrics: Mapping[str, float | None],
    trained: str | None = None,
) -> Iterator[str | None]:
    """The child run ``round-K`` with the round's metrics logged, to log the rest into; None when a
    run over these very outputs was logged before (a resumed run logs nothing twice).

    ``trained``: the round's new policy, logged as a LoggedModel of the child
    that the round's metrics are linked to.
    """
    name, tags = f"round-{round_index}", outputs_tag(outputs)
    if find_child_run(parent_run_id, name, tags):
        yield None
        return
    with start_child_run(parent_run_id, name, step=round_index, tags=tags) as child:
        model_id = log_trained_model(child.info.run_id, trained, round_index) if trained else None
        log_metrics(metrics, step=round_index, run_id=child.info.run_id, model_id=model_id)
        yield child.info.run_id
        # Inside the block: the child only ends FINISHED (and is skipped on a
        # rerun) once the parent has its point too.
        log_metrics(metrics, step=round_index, run_id=parent_run_id)
