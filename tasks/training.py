"""Fine-tuning stages: the reviser's two phases and every method's policy updates share one body."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.report import TRAIN_METRICS_FILE, split_measurements
from tasks.stage import Input, stage


# v2: dropout off for dpo, spin and ift; IFT's plain pass only at a configured λ = 0; OnTIES's
# stable top-k; timings moved from train_metrics.json to the manifest.
@stage("train-policy", version=2, scratch="work", tags=("accelerator",))
def train_policy(tmp: Path, scratch: Path, model: Input, rows: Input, train: TrainConfig, seed: int, dtype: str) -> dict:
    """Fine-tune ``model`` on the rows in the file ``rows`` with ``train.objective``; the output folder is the new
    model. ``scratch`` keeps the trainer's checkpoints beside it until the model is in place."""
    from pipeline_lib.training.objectives import train_model  # torch and TRL load only when a model is trained

    outcome, timings = split_measurements(
        train_model(model, pq.read_table(rows).to_pylist(), tmp, train, seed=seed, dtype=dtype, work_dir=scratch)
    )
    (tmp / TRAIN_METRICS_FILE).write_text(json.dumps(outcome, indent=2))
    return {"train": {**{k: v for k, v in outcome.items() if k != "loss_history"}, **timings}}


warmup_reviser = train_policy.named("warmup-reviser")
train_reviser = train_policy.named("train-reviser")
