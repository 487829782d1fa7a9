"""One pipeline run's folder: ``runs/<name>-<hash>/`` with its resolved config and
``<round>/<stage>`` links to the key-addressed stage outputs it used.

The folder is named by the recipe's hash, so rerunning the same command finds
the same folder; a changed setting starts a new folder, but its stages still
reuse every output whose inputs did not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.config import RecipeBase

from pipeline_lib.config import config_hash, save_resolved
from pipeline_lib.core.errors import UserError
from pipeline_lib.core.home import runs_dir


@dataclass(frozen=True)
class RunLayout:
    root: Path
    config_hash: str

    @property
    def name(self) -> str:
        return self.root.name

    def stage(self, stage: str, round_index: int | None = None) -> Path:
        """Where the run folder links a stage's output; data prep outside any round goes under ``shared/``."""
        group = "shared" if round_index is None else f"round-{round_index}"
        return self.root / group / stage


def open_run(recipe: RecipeBase) -> RunLayout:
    digest = config_hash(recipe)
    root = runs_dir() / f"{recipe.name}-{digest[:10]}"
    save_resolved(recipe, root)
    return RunLayout(root=root, config_hash=digest)


class StageForcing:
    """``--from-stage NAME``: recompute that stage and every stage the flow runs after it.

    Flows run their stages in order, so "after" is decided as they run: the
    first time a stage named NAME is reached, it and everything that follows
    (later rounds included) are forced. ``stages`` are the declared stage
    names; a run that never reached NAME says so instead of ending as if it
    had recomputed something.
    """

    def __init__(self, stages: list[str], from_stage: str | None) -> None:
        if from_stage is not None and from_stage not in stages:
            raise UserError(f"--from-stage {from_stage!r} is not a stage of this flow; stages: {', '.join(stages)}")
        self._from_stage = from_stage
        self._reached = False
        self._seen: list[str] = []

    @property
    def from_stage(self) -> str | None:
        return self._from_stage

    def __call__(self, stage: str) -> bool:
        if stage not in self._seen:
            self._seen.append(stage)
        self._reached = self._reached or stage == self._from_stage
        return self._reached

    def check_reached(self) -> None:
        if self._from_stage is not None and not self._reached:
            raise UserError(
                f"--from-stage {self._from_stage!r}: this run has no such stage, so nothing was recomputed; "
                f"its stages: {', '.join(self._seen)}"
            )
