"""Fine-tuning stages: the reviser's two phases and every method's policy updates share one body."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.launch import launch_record
from pipeline_lib.training.launch import train as run_training  # torch and TRL load only when a model is trained
from pipeline_lib.training.report import TRAIN_METRICS_FILE, split_measurements
from tasks.stage import Input, KeyedBy, stage


# v2: dropout off for dpo, spin and ift; IFT's plain pass only at a configured λ = 0; OnTIES's
# stable top-k; timings moved from train_metrics.json to the manifest.
@stage("train-policy", version=2, scratch="work", tags=("accelerator",))
def train_policy(
    tmp: Path, scratch: Path, model: Input, rows: Input, train: KeyedBy(TrainConfig, TrainConfig.keyed), seed: int, dtype: str
) -> dict:
    """Fine-tune ``model`` on the rows in the file ``rows`` with ``train.objective``, in this process or in
    ``train.distributed``'s; the output folder is the new model. ``scratch`` keeps the trainer's checkpoints
    (and a launched run's call, markers and logs) beside it until the model is in place."""
    outcome, timings = split_measurements(run_training(model, rows, tmp, train, seed=seed, dtype=dtype, work_dir=scratch))
    (tmp / TRAIN_METRICS_FILE).write_text(json.dumps(outcome, indent=2))
    # Where it ran goes to the manifest, like the timings; the key holds the world size and strategy.
    return {"train": {**{k: v for k, v in outcome.items() if k != "loss_history"}, **timings, **launch_record(train)}}


warmup_reviser = train_policy.named("warmup-reviser")
train_reviser = train_policy.named("train-reviser")
