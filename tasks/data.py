"""Dataset preparation stages."""

from pathlib import Path

from pipeline_lib.config import SuiteConfig
from pipeline_lib.evaluation import write_suite_split
from pipeline_lib.store import build_stage
from tasks.stage import stage_task


@stage_task("prepare-suite", tags=("data",))
def prepare_suite(
    out_dir: str, key: str, force: bool, suite: SuiteConfig, split: str, start: int = 0, stop: int | None = None
) -> str:
    """One split of the built-in suite, or the slice ``start:stop`` of it (SEFT's reviser and pool prompts)."""

    def build(tmp: Path) -> dict:
        return write_suite_split(suite, split, tmp, start, stop)

    return str(build_stage(Path(out_dir), "prepare-suite", key, build, force=force))
