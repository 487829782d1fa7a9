"""Text generation behind one interface: pick a backend from the recipe, sample into Parquet."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.core.errors import UserError
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams, derive_seed, render_chat
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.sampling.environment import require_vllm_python, vllm_python
from pipeline_lib.sampling.shards import SAMPLES_SCHEMA, sample_to_parquet, samples_table

__all__ = [
    "SAMPLES_SCHEMA",
    "Sample",
    "Sampler",
    "SamplingParams",
    "derive_seed",
    "make_sampler",
    "render_chat",
    "resolve_backend",
    "stop_all_servers",
    "sample_to_parquet",
    "samples_table",
]


def resolve_backend(config: SamplerConfig) -> tuple[str, str]:
    """The backend that will run (``hf`` or ``vllm``) and why; ``auto`` prefers vLLM when it is installed."""
    if config.servers:
        return "vllm", f"the server{'s' if len(config.servers) > 1 else ''} at {', '.join(config.servers)}"
    if config.backend == "hf":
        return "hf", "sampler.backend=hf"
    if config.backend == "vllm":
        return "vllm", f"sampler.backend=vllm, environment {require_vllm_python('sampler.backend=vllm')}"
    python = vllm_python()
    if python is None:
        return "hf", "auto: no vLLM environment (`make setup-vllm` installs one)"
    return "vllm", f"auto: vLLM environment at {python}"


def stop_all_servers() -> None:
    """Stop the vLLM servers this process keeps warm between stages (a no-op when there are none)."""
    from pipeline_lib.sampling.vllm_server import POOL

    POOL.close()


def make_sampler(
    config: SamplerConfig, model_path: str | Path, dtype: str = "float32", batch_size: int | None = None
) -> Sampler:
    """The sampler the recipe asks for; ``sampler.name`` says which backend ``auto`` chose.

    Several servers (``sampler.replicas`` or ``sampler.base_urls``) come as one
    ``ReplicaSet``, whose shards ``sample_to_parquet`` and the judge deal out.
    """
    backend, why = resolve_backend(config)
    batch_size = batch_size or config.batch_size
    # Imported here so that reading configs or sample files does not load torch.
    if backend == "vllm":
        from pipeline_lib.sampling.vllm_client import VLLMSampler
        from pipeline_lib.sampling.vllm_server import ServerOptions

        server_settings = config.vllm.model_dump(exclude={"keep_warm", "extra_args"})
        options = ServerOptions(dtype=dtype, seed=config.seed, extra_args=tuple(config.vllm.extra_args), **server_settings)
        servers = config.servers
        if config.replicas > 1 or len(servers) > 1:
            from pipeline_lib.sampling.replicas import open_replicas

            return open_replicas(model_path, options, batch_size, config.replicas, servers, config.vllm.keep_warm)
        return VLLMSampler(
            model_path, options, batch_size=batch_size, base_url=servers[0] if servers else None, keep_warm=config.vllm.keep_warm
        )
    if config.replicas > 1:
        raise UserError(f"sampler.replicas: {config.replicas} replicas are vLLM servers, but the sampler is HF here ({why})")
    from pipeline_lib.sampling.hf import HFSampler

    return HFSampler(model_path, dtype=dtype, batch_size=batch_size)
