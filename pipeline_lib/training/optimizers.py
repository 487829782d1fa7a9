"""The optimizer a recipe names, as the (class, keyword arguments) pair transformers' Trainer accepts.

Trainer builds the optimizer itself from this pair (after grouping parameters
so that biases and norms get no weight decay), so an optimizer that needs more
than the parameters, such as the online merging ones with their reference
model, only has to put what it needs into the keyword arguments.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline_lib.config import TrainConfig
from pipeline_lib.errors import UserError

OptimizerSpec = tuple[type[torch.optim.Optimizer], dict[str, Any]]


def optimizer_spec(config: TrainConfig) -> OptimizerSpec:
    """AdamW with the recipe's learning rate; the only optimizer so far."""
    if config.optimizer != "adamw":
        raise UserError(f"train.optimizer {config.optimizer!r} is not available yet; use 'adamw'")
    # Trainer adds weight_decay per parameter group; lr is its starting value under the schedule.
    return torch.optim.AdamW, {"lr": config.lr, "betas": (0.9, 0.999), "eps": 1e-8}
