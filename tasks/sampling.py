"""Generation stages: every one goes through the sampler interface."""

from pathlib import Path

from pipeline_lib.config import SamplerConfig
from pipeline_lib.evaluation import read_items
from pipeline_lib.sampling import SamplingParams
from pipeline_lib.sampling.stage import sample_chat
from tasks.stage import build_with_shards, running_stage, stage_task

SAMPLES_FILE = "samples.parquet"


@stage_task("generate-answers", tags=("accelerator",))
def generate_answers(
    out_dir: str,
    key: str,
    force: bool,
    items_dir: str,
    model_path: str,
    dtype: str,
    sampler: SamplerConfig,
    params: SamplingParams,
    batch_size: int,
) -> str:
    """Answer every suite item (``n`` samples each, per ``params``)."""

    def build(tmp: Path, shards: Path) -> dict:
        items = read_items(Path(items_dir))
        stats = sample_chat(
            [item.id for item in items],
            [item.prompt for item in items],
            Path(model_path),
            dtype,
            sampler,
            params,
            tmp / SAMPLES_FILE,
            shards,
            batch_size=batch_size,
        )
        return {"sampling": stats, "rows": stats["n_samples"]}

    return build_with_shards(out_dir, running_stage(), key, build, force)
