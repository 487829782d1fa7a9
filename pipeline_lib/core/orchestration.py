"""The ``orchestration`` section: where independent work of one run goes (no Prefect, no Ray here).

Unset, everything runs one after another in the command's process, as it
always did. ``task_runner: local`` runs independent work (compare-methods
contestants, a round's evaluations) on a pool of ``max_workers`` processes,
or threads where the work holds no model in the process; ``task_runner: ray`` on a
Ray cluster: a local one started for the run and stopped after it
(``ray.address: null``), or the one at ``ray.address``. Where work runs never
changes what it computes, so the section is output-neutral (it never renames
a run or rekeys a stage).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline_lib.core.section import Section


class RayOptions(Section):
    address: str | None = Field(
        None, description="a running cluster (host:port of its GCS, ray://host:10001, or auto); null: start a local Ray for the run"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started for the run; null: every core")
    timeout_s: float = Field(30.0, gt=0, description="how long to wait for ray.address to answer before failing")

    @model_validator(mode="after")
    def _used(self) -> RayOptions:
        # A setting the chosen cluster ignores is refused, not accepted and dropped. Compared with the
        # defaults, not by being written: a recipe dumped and read again (a job's, a retry's) says them all.
        if self.address is not None and self.num_cpus is not None:
            raise ValueError("num_cpus sizes the local Ray started for the run; a cluster at ray.address has its own")
        if self.address is None and self.timeout_s != _default(RayOptions, "timeout_s"):
            raise ValueError("timeout_s bounds the wait for ray.address; without an address Ray starts here")
        return self


class OrchestrationConfig(Section):
    task_runner: Literal["local", "ray"] = Field("local", description="local: a pool on this machine; ray: a Ray cluster")
    max_workers: int = Field(2, ge=1, description="local: jobs that run at once (processes; threads for a round's evaluations on vLLM)")
    ray: RayOptions = Field(default_factory=RayOptions)

    @model_validator(mode="after")
    def _used(self) -> OrchestrationConfig:
        if self.task_runner == "local" and self.ray != RayOptions():
            raise ValueError("the ray settings need task_runner: ray")
        if self.task_runner == "ray" and self.max_workers != _default(OrchestrationConfig, "max_workers"):
            raise ValueError("max_workers sizes the local process pool; on Ray the cluster's resources decide")
        return self


def _default(section: type[Section], name: str) -> object:
    return section.model_fields[name].default
