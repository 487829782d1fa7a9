"""``train.distributed``: how many processes train, on how many machines, with which accelerate strategy.

No torch import here: the recipe is validated before anything heavy loads.
``train.batch_size`` stays the global batch; each of the ``world_size``
processes takes ``batch_size / world_size`` rows per step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from pipeline_lib.core.section import Section

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
# accelerate's distributed_type (and DeepSpeed's ZeRO stage) each strategy's config file must declare.
STRATEGIES: dict[str, tuple[str, int | None]] = {
    "ddp": ("MULTI_GPU", None),
    "fsdp": ("FSDP", None),
    "deepspeed-zero2": ("DEEPSPEED", 2),
    "deepspeed-zero3": ("DEEPSPEED", 3),
}
# Sharded strategies: no process holds the whole model, so LoRA merging and the merging optimizers cannot run.
SHARDED = ("fsdp", "deepspeed-zero2", "deepspeed-zero3")
DEFAULT_PORT = 29500  # accelerate's; several machines must agree on one, a single machine picks a free one


class DistributedConfig(Section):
    num_processes: int = Field(1, ge=1, description="processes on each machine: one per GPU (CPU: at most one per core)")
    num_machines: int = Field(1, ge=1)
    machine_rank: int = Field(0, ge=0, description="0 on the machine that runs the pipeline (see docs/scaling.md)")
    main_process_ip: str | None = Field(None, description="address of machine 0; needed with several machines")
    main_process_port: int | None = Field(
        None, ge=1, le=65535, description=f"port on machine 0; null: a free one (one machine) or {DEFAULT_PORT}"
    )
    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = "ddp"
    config_file: str | None = Field(None, description="an accelerate config file; null: configs/accelerate/<strategy>.yaml")
    join_timeout_s: float = Field(
        600.0, gt=0, description="seconds from launch until every process of this machine has joined the group"
    )

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines

    def accelerate_config(self) -> Path:
        return Path(self.config_file).resolve() if self.config_file else ACCELERATE_CONFIGS / f"{self.strategy}.yaml"

    @model_validator(mode="after")
    def _consistent(self) -> DistributedConfig:
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("num_machines > 1 needs main_process_ip, the address of machine 0 that every machine reaches")
        problem = config_file_problem(self.accelerate_config(), self.strategy)
        if problem:
            raise ValueError(f"{'config_file' if self.config_file else 'strategy'}: {problem}")
        return self


def config_file_problem(path: Path, strategy: str) -> str | None:
    """Why ``path`` is not an accelerate config for ``strategy``, or None."""
    if not path.is_file():
        return f"accelerate config file not found: {path}"
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        return f"{path}: not valid YAML: {error}"
    if not isinstance(loaded, dict):
        return f"{path}: not an accelerate config (a mapping with distributed_type)"
    kind, zero_stage = STRATEGIES[strategy]
    if loaded.get("distributed_type") != kind:
        return f"{path} has distributed_type {loaded.get('distributed_type')!r}; strategy {strategy} needs {kind!r}"
    found_stage = (loaded.get("deepspeed_config") or {}).get("zero_stage")
    if zero_stage is not None and found_stage != zero_stage:
        return f"{path} has deepspeed_config.zero_stage {found_stage!r}; strategy {strategy} needs {zero_stage}"
    return None


def batch_arguments(batch_size: int) -> dict[str, Any]:
    """The TrainingArguments that make ``batch_size`` the global batch of this process's group
    (torchrun's WORLD_SIZE processes under ``accelerate launch``, else this one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return {"per_device_train_batch_size": batch_size}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        # DeepSpeed sizes its micro-batch from the per-device size: each process draws its own share.
        return {"per_device_train_batch_size": batch_size // world}
    # One global batch is drawn and split among the processes. Drawing per-process batches would group
    # rows by length in groups of another size (transformers' LengthGroupedSampler), so the steps
    # would not train on the batches one process trains on.
    return {"per_device_train_batch_size": batch_size, "accelerator_config": {"split_batches": True}}
