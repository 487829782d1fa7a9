"""Fine-tuning stages: the reviser's two phases and every method's policy updates share one body."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline_lib.config import TrainConfig
from pipeline_lib.store import build_stage
from tasks.stage import running_stage, stage_task

from pipeline_lib.seft.report import TRAIN_METRICS_FILE, split_measurements


# v2: dropout off for dpo, spin and ift; IFT's plain pass only at a configured λ = 0; OnTIES's
# stable top-k; timings moved from train_metrics.json to the manifest.
@stage_task("train-policy", version=2, tags=("accelerator",))
def train_model(
    out_dir: str, key: str, force: bool, model_path: str, rows_file: str, train: TrainConfig, seed: int, dtype: str
) -> str:
    """Fine-tune ``model_path`` on the rows in ``rows_file`` with ``train.objective``; the output folder is the new model."""
    from pipeline_lib.training import train_model as fine_tune_rows  # torch and TRL load only when a model is trained

    out = Path(out_dir)
    # The trainer's scratch, beside the output; removed once the model is in place.
    work = out.with_name(out.name + ".work")

    def build(tmp: Path) -> dict:
        rows = pq.read_table(rows_file).to_pylist()
        outcome, timings = split_measurements(
            fine_tune_rows(model_path, rows, tmp, train, seed=seed, dtype=dtype, work_dir=work)
        )
        (tmp / TRAIN_METRICS_FILE).write_text(json.dumps(outcome, indent=2))
        return {"train": {**{k: v for k, v in outcome.items() if k != "loss_history"}, **timings}}

    return str(build_stage(out, running_stage(), key, build, force=force, scratch=work))


warmup_reviser = train_model.with_options(name="warmup-reviser")
train_reviser = train_model.with_options(name="train-reviser")
train_policy = train_model
