"""Dataset preparation stages."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib import suite as suite_package
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import write_suite_split
from tasks.stage import KeyedBy, stage


def _without_sizes(suite: SuiteConfig) -> dict:
    return suite.model_dump(exclude={"n_train", "n_eval"})


@stage("prepare-suite", code=(suite_package,), tags=("data",))
def prepare_suite(
    tmp: Path, suite: KeyedBy(SuiteConfig, _without_sizes), split: str, size: int, start: int = 0, stop: int | None = None
) -> dict:
    """One split of the built-in suite (``size`` items), or the slice ``start:stop`` of it (SEFT's reviser and pool
    prompts). The other split's size is not read, so changing it keeps this split."""
    sized = suite.model_copy(update={"n_eval" if split == "eval" else "n_train": size})
    return write_suite_split(sized, split, tmp, start, stop)
