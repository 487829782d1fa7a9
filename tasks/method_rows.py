"""Stages that turn suite items, samples, scores and revisions into a method's training rows."""

from pathlib import Path

from pipeline_lib import method_rows
from pipeline_lib.evaluation import SCORES_FILE
from pipeline_lib.seft.revise import REVISIONS_FILE
from pipeline_lib.store import build_stage
from tasks.sampling import SAMPLES_FILE
from tasks.stage import running_stage, stage_task


@stage_task("build-training-rows", tags=("cpu",))
def build_training_rows(
    out_dir: str,
    key: str,
    force: bool,
    kind: str,
    items_dir: str,
    samples_dir: str | None = None,
    scores_dir: str | None = None,
    revisions_dir: str | None = None,
    previous_dir: str | None = None,
    seed: int = 0,
) -> str:
    """``kind``: sft (SFT and IFT), spin, dpo or figa; see ``pipeline_lib.method_rows``."""
    items = Path(items_dir)

    def build(tmp: Path) -> dict:
        if kind == "sft":
            return method_rows.sft_rows(items, tmp)
        if kind == "spin":
            previous = Path(previous_dir) / method_rows.PAIRS_FILE if previous_dir else None
            return method_rows.spin_pairs(items, Path(samples_dir) / SAMPLES_FILE, previous, seed, tmp)
        if kind == "dpo":
            return method_rows.dpo_pairs(items, Path(scores_dir) / SCORES_FILE, tmp)
        revisions = Path(revisions_dir) / REVISIONS_FILE if revisions_dir else None
        return method_rows.figa_rows(items, Path(samples_dir) / SAMPLES_FILE, revisions, tmp)

    return str(build_stage(Path(out_dir), running_stage(), key, build, force=force))
