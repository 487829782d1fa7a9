"""Dataset preparation stages."""

from pathlib import Path

from pipeline_lib.config import SuiteConfig
from pipeline_lib.evaluation import write_suite_split
from pipeline_lib.store import build_stage
from tasks.stage import stage_task


@stage_task("prepare-suite", tags=("data",))
def prepare_suite(out_dir: str, key: str, force: bool, suite: SuiteConfig, split: str) -> str:
    return str(build_stage(Path(out_dir), "prepare-suite", key, lambda tmp: write_suite_split(suite, split, tmp), force=force))
