"""Text generation behind one interface: pick a backend from the recipe, sample into Parquet."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.config import SamplerConfig
from pipeline_lib.sampling.base import Sample, Sampler, SamplingParams, derive_seed, render_chat
from pipeline_lib.sampling.shards import SAMPLES_SCHEMA, sample_to_parquet, samples_table

__all__ = [
    "SAMPLES_SCHEMA",
    "Sample",
    "Sampler",
    "SamplingParams",
    "derive_seed",
    "make_sampler",
    "render_chat",
    "sample_to_parquet",
    "samples_table",
]


def make_sampler(
    config: SamplerConfig, model_path: str | Path, dtype: str = "float32", batch_size: int | None = None
) -> Sampler:
    """The sampler the recipe asks for; ``sampler.name`` says which backend ``auto`` chose.

    Only the HF backend exists so far, so ``auto`` means HF.
    """
    # Imported here so that reading configs or sample files does not load torch.
    from pipeline_lib.sampling.hf import HFSampler

    return HFSampler(model_path, dtype=dtype, batch_size=batch_size or config.batch_size)
