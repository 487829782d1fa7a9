"""Generation stages: every one goes through the sampler interface."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.sampling import SamplingParams
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.sampling.stage import sample_chat
from pipeline_lib.data.items import read_prompt_items
from tasks.stage import Input, Neutral, stage

SAMPLES_FILE = "samples.parquet"


@stage("generate-answers", scratch="partial", tags=("accelerator",))
def generate_answers(
    tmp: Path,
    scratch: Path,
    model: Input,
    items: Input,
    params: SamplingParams,
    backend: str,
    dtype: str,
    sampler: Neutral(SamplerConfig),
    batch_size: Neutral(int),
) -> dict:
    """Answer every item, the suite's or a prepared data role's (``params.n`` samples each); ``sampler`` says how
    to reach ``backend``."""
    prompts = read_prompt_items(items)
    stats = sample_chat(
        [item.id for item in prompts],
        [item.messages for item in prompts],
        Path(model),
        dtype,
        sampler.model_copy(update={"backend": backend}),
        params,
        tmp / SAMPLES_FILE,
        scratch,
        batch_size=batch_size,
    )
    return {"sampling": stats, "rows": stats["n_samples"]}


# The policy's own samples, which a method learns from; held-out answers keep the name above.
sample_policy = generate_answers.named("sample-policy")
