"""The ``train`` section: objective, optimizer and their settings (METHODS.md §2–5, §7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline_lib.core.hashing import hash_json
from pipeline_lib.core.section import Section
from pipeline_lib.training.distributed import SHARDED, DistributedConfig

class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class PreferenceConfig(Section):
    """DPO and SPIN (METHODS.md §2, §7)."""

    beta: float = Field(0.1, gt=0.0, description="β (SPIN's λ): strength of the pull towards the reference")
    loss_type: Literal["sigmoid", "hinge"] = Field("sigmoid", description="sigmoid: −log σ(u); hinge: relu(1 − u)")


class IftConfig(Section):
    """Intuitive Fine-Tuning (METHODS.md §3)."""

    lam: float = Field(0.2, ge=0.0, le=1.0, description="λ: share of the model's own guess in each input embedding")
    lambda_schedule: Literal["static", "linear"] = Field("static", description="linear: from lambda_min up to lam")
    lambda_min: float = Field(0.0, ge=0.0, le=1.0, description="λ at step 0 of the linear schedule")
    lambda_warmup_steps: int = Field(150, ge=1, description="optimizer steps the linear schedule takes to reach lam")
    lambda_noise_std: float = Field(0.0, ge=0.0, description="noisy λ: λ·(1 + std·N(0,1)) per step (paper: 0.5); 0: off")
    gamma: float = Field(0.95, ge=0.0, le=1.0, description="γ of the relation-propagation weights; 0: plain SFT weights")
    detach_weights: bool = Field(False, description="stop gradients through the weights (the reference code does not)")


class FigaConfig(Section):
    """FIGA's token weights (METHODS.md §4)."""

    alpha: float = Field(1.0, ge=0.0, description="weight of revised tokens the edit inserted or replaced, and its EOS")
    beta: float = Field(0.5, ge=0.0, description="−β on original tokens the edit deleted or replaced")
    negative_band: list[float] = Field(
        default_factory=lambda: [0.0, 0.6],
        description="a negative token counts only while its NLL lies in [low, high]; the reference code keeps NLL <= 0.6"
        " (0.6 <= NLL <= 1.0 before its commit of 2024-05-05: [0.6, 1.0])",
    )

    @field_validator("negative_band")
    @classmethod
    def _band(cls, band: list[float]) -> list[float]:
        if len(band) != 2 or not 0 <= band[0] <= band[1]:
            raise ValueError(f"give [low, high] with 0 <= low <= high, got {band}")
        return band


class MergingConfig(Section):
    """OnDARE / OnTIES (METHODS.md §5): merge each update with τ = θ_sft − θ_base."""

    sft_model: str | None = Field(None, description="the SFT model of τ (alias, folder or hub id)")
    base_model: str | None = Field(None, description="its pretrained base")
    reserve_p: float = Field(0.01, gt=0.0, le=1.0, description="p: share of τ and of each update kept")
    alpha: float = Field(1e-7, ge=0.0, lt=1.0, description="α: weight of τ in each step; 0: merging off")
    rescale: bool = Field(False, description="L1-rescale the sparsified update to its norm before dropping")
    merge_every: int = Field(1, ge=1, description="K: merge the accumulated update every K steps")
    clip: float = Field(1.0, gt=0.0, description="OnDARE: τ (and a rescaled update) clipped to [−clip, clip]")


# Objectives that train with every dropout off (pipeline_lib.training.trainers.dropout_off), so that the
# policy's log-probabilities are comparable with the reference's.
DROPOUT_OFF_OBJECTIVES = ("dpo", "spin", "ift")


class TrainConfig(Section):
    objective: Literal["sft", "dpo", "spin", "ift", "figa"] = "sft"
    sft_reduction: Literal["sequence", "token"] = Field(
        "sequence", description="SFT loss: mean NLL per sequence, then over the batch (METHODS.md §7); token: over all tokens"
    )
    optimizer: Literal["adamw", "ondare", "onties"] = "adamw"
    mode: Literal["full", "lora"] = "full"
    lr: float = Field(1e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_tokens: int | None = Field(
        None, ge=1, description="training-token budget: replaces epochs by budget / tokens per epoch"
    )
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=8)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    ift: IftConfig = Field(default_factory=IftConfig)
    figa: FigaConfig = Field(default_factory=FigaConfig)
    merging: MergingConfig = Field(default_factory=MergingConfig)
    # Left out of every dump while unset, so that recipes, reviser phases and stage keys that
    # do not use them hash as they did before they existed.
    launcher: Literal["inprocess", "accelerate"] | None = Field(
        None, exclude_if=lambda v: v is None, description="accelerate: train in train.distributed's processes; null: in process"
    )
    distributed: DistributedConfig | None = Field(
        None, exclude_if=lambda v: v is None, description="with launcher accelerate; null: one process on this machine"
    )

    @field_validator("launcher")
    @classmethod
    def _inprocess_is_unset(cls, launcher: str | None) -> str | None:
        return None if launcher == "inprocess" else launcher  # the default, spelled out: the same run

    @property
    def launched(self) -> DistributedConfig | None:
        """The processes ``accelerate launch`` starts, or None to train in this process."""
        if self.launcher != "accelerate":
            return None
        return self.distributed or DistributedConfig()

    def keyed(self) -> dict[str, Any]:
        """What the trained weights depend on: not the machines' addresses, ranks or timeouts (the same
        run seen from machine 0 or 1), but the world size and strategy, which change float sums."""
        keyed = self.model_dump(mode="json", exclude={"distributed"})
        if (launched := self.launched) is not None:
            keyed["distributed"] = {"world_size": launched.world_size, "strategy": launched.strategy}
            if launched.config_file:
                keyed["distributed"]["config"] = hash_json(launched.accelerate_config().read_text())
        return keyed

    @model_validator(mode="after")
    def _launch_fits(self) -> TrainConfig:
        if self.distributed is not None and self.launcher != "accelerate":
            raise ValueError("distributed is set but launcher is not 'accelerate'; set train.launcher=accelerate")
        launched = self.launched
        if launched is None:
            return self
        if launched.machine_rank != 0:
            raise ValueError(
                "distributed.machine_rank: a recipe runs on machine 0; each other machine joins with the command "
                "it prints (python -m pipeline_lib.training.launch CALL --machine-rank K)"
            )
        if self.batch_size % launched.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is the global batch and does not divide among {launched.world_size} processes "
                "(distributed.num_processes x num_machines)"
            )
        if launched.strategy in SHARDED and (self.mode == "lora" or self.optimizer != "adamw"):
            what = "mode lora (merging the adapter)" if self.mode == "lora" else f"optimizer {self.optimizer}"
            raise ValueError(f"{what} needs the whole model in each process; strategy {launched.strategy} shards it: use ddp")
        return self

    @model_validator(mode="after")
    def _merging_needs_full(self) -> TrainConfig:
        if self.optimizer != "adamw" and self.mode == "lora":
            raise ValueError(f"optimizer {self.optimizer!r} merges into the full weights; use mode 'full'")
        # By value, not by whether it was given: compare-methods hands each contestant a full copy.
        if self.objective in DROPOUT_OFF_OBJECTIVES and self.lora.dropout != LoraConfig().dropout:
            raise ValueError(
                f"lora.dropout is not used by objective {self.objective!r}, which trains with dropout off "
                "(as the official SPIN and IFT trainers and TRL's DPO do); remove it"
            )
        return self
