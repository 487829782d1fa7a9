"""The optimizer a recipe names, as the (class, keyword arguments) pair transformers' Trainer accepts.

Trainer builds the optimizer itself from this pair (after grouping parameters
so that biases and norms get no weight decay), so the online merging
optimizers get their reference delta τ through the keyword arguments, keyed
by the identity of the parameters of the model being trained.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from pipeline_lib.core.errors import UserError
from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.merging import OPTIMIZERS

OptimizerSpec = tuple[type[torch.optim.Optimizer], dict[str, Any]]

# The betas and eps of every optimizer here; Trainer adds weight_decay per parameter group.
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}


def optimizer_spec(config: TrainConfig, model: PreTrainedModel, seed: int) -> OptimizerSpec:
    """AdamW, or OnDARE / OnTIES with τ from ``train.merging``'s SFT and base models."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW, {"lr": config.lr, **ADAM}
    merging = config.merging
    if not merging.sft_model or not merging.base_model:
        raise UserError(
            f"train.optimizer {config.optimizer!r} needs train.merging.sft_model and train.merging.base_model "
            "(τ is the SFT model minus its base)"
        )
    deltas = reference_deltas(model, merging.sft_model, merging.base_model)
    return OPTIMIZERS[config.optimizer], {
        "lr": config.lr,
        **ADAM,
        "deltas": deltas,
        "reserve_p": merging.reserve_p,
        "alpha": merging.alpha,
        "rescale": merging.rescale,
        "merge_every": merging.merge_every,
        "clip": merging.clip,
        "seed": seed,
    }


def reference_deltas(model: PreTrainedModel, sft_ref: str, base_ref: str) -> dict[int, torch.Tensor]:
    """τ = θ_sft − θ_base for every trainable parameter of ``model``, in its dtype, keyed by ``id(parameter)``."""
    from pipeline_lib.models import resolve_model
    from pipeline_lib.models.loading import load_causal_lm

    sft = dict(load_causal_lm(resolve_model(sft_ref)).named_parameters())
    base = dict(load_causal_lm(resolve_model(base_ref)).named_parameters())
    deltas = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in sft or name not in base or not sft[name].shape == base[name].shape == param.shape:
            raise UserError(
                f"train.merging: parameter {name!r} {tuple(param.shape)} has no counterpart of that shape in both "
                f"{sft_ref!r} and {base_ref!r}; τ needs the SFT and base models of the trained architecture"
            )
        deltas[id(param)] = (sft[name].detach() - base[name].detach()).to(param.device, param.dtype)
    return deltas
