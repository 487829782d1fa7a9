"""Generation stages: every one goes through the sampler interface."""

from pathlib import Path

from pipeline_lib.config import SamplerConfig
from pipeline_lib.evaluation import read_items
from pipeline_lib.sampling import SamplingParams
from pipeline_lib.sampling.stage import sample_chat
from pipeline_lib.store import build_stage
from tasks.stage import stage_task

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
    """Answer every suite item; shards in a scratch folder let a killed run resume mid-stage."""
    out = Path(out_dir)
    shards = out.with_name(out.name + ".partial")

    def build(tmp: Path) -> dict:
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

    return str(build_stage(out, "generate-answers", key, build, force=force, scratch=shards))
