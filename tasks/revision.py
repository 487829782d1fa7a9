"""The reviser's stages, shared by SEFT and FIGA: its training data, and revising the policy's samples."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from pipeline_lib import revision, tracking
from pipeline_lib.reporting import metrics as names
from pipeline_lib.revision.config import ReviserConfig
from pipeline_lib.data.prepare import ROWS_FILE
from pipeline_lib.revision.reviser_data import ADAPTIVE_FILE, WARMUP_FILE, build_reviser_data
from pipeline_lib.revision.revise import revise_samples
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store import read_manifest
from pipeline_lib.suite.scoring import SCORES_FILE
from pipeline_lib.tracking.rounds import outputs_tag
from pipeline_lib.training.report import train_metrics
from tasks.limits import limited
from tasks.sampling import SAMPLES_FILE
from tasks.stage import Input, KeyedBy, Neutral, OptionalInput, stage


def _data_settings(reviser: ReviserConfig) -> dict:
    # The data do not depend on how the reviser is then trained.
    return reviser.model_dump(exclude={"warmup", "train"})


@stage("build-reviser-data", code=(revision,), tags=("cpu",))
def reviser_data(
    tmp: Path, scores: OptionalInput, preference: OptionalInput, reviser: KeyedBy(ReviserConfig, _data_settings), seed: int
) -> dict:
    """Graded samples (``scores``) and the prepared ``data.preference`` folder (``preference``) become
    decision-labelled warm-up and adaptive rows."""
    preference_rows = Path(preference) / ROWS_FILE if preference else None
    return build_reviser_data(Path(scores) / SCORES_FILE if scores else None, preference_rows, reviser, seed, tmp)


# v2: keyed by this version instead of the reviser code's digest, so moving code no longer reruns the reviser.
@stage("revise", version=2, scratch="partial", tags=("accelerator",))
def revise(
    tmp: Path,
    scratch: Path,
    reviser: Input,
    samples: Input,
    items: Input,
    max_new_tokens: int,
    backend: str,
    dtype: str,
    seed: int,
    sampler: Neutral(SamplerConfig),
    batch_size: Neutral(int),
) -> dict:
    """The reviser's decision and revision for every policy sample."""
    return revise_samples(
        Path(items),
        Path(samples) / SAMPLES_FILE,
        Path(reviser),
        dtype,
        sampler.model_copy(update={"backend": backend}),
        max_new_tokens,
        batch_size,
        seed,
        tmp,
        scratch,
    )


@limited("tracking")
@task(name="log-reviser", retries=2, retry_delay_seconds=2)
def log_reviser(parent_run_id: str, data_dir: str, warmup_dir: str, reviser_dir: str) -> None:
    """The reviser's data counts, datasets and losses, as the parent's ``reviser`` child run (logged once)."""
    data = read_manifest(Path(data_dir)) or {}
    name = "reviser"
    tags = outputs_tag([data_dir, warmup_dir, reviser_dir])
    if tracking.find_child_run(parent_run_id, name, tags):
        return
    metrics = {
        names.metric(names.REVISER, "warmup_loss"): train_metrics(warmup_dir)["train_loss"],
        names.metric(names.REVISER, "train_loss"): train_metrics(reviser_dir)["train_loss"],
        names.metric(names.REVISER, "warmup_rows"): data["warmup_rows"],
        names.metric(names.REVISER, "adaptive_rows"): data["adaptive_rows"],
        **{names.metric(names.REVISER, "data", decision): count for decision, count in data["decisions"].items()},
    }
    with tracking.start_child_run(parent_run_id, name, tags=tags) as child:
        run_id = child.info.run_id
        tracking.log_metrics(metrics, run_id=run_id)
        tracking.log_text(json.dumps(data, indent=2), "reviser/data_report.json", run_id=run_id)
        for file, context in ((WARMUP_FILE, "reviser-warmup"), (ADAPTIVE_FILE, "reviser-adaptive")):
            tracking.log_dataset(Path(data_dir) / file, name=context, context="train", run_id=run_id)
        tracking.log_metrics(metrics, run_id=parent_run_id)
