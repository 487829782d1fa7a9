"""Where one pipeline run keeps its outputs: ``runs/<name>-<hash>/<round>/<stage>/``.

The folder is named by the recipe's hash, so rerunning the same command finds
the same folder and resumes, while any change of an output-affecting setting
starts a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.config import Recipe, config_hash, save_resolved
from pipeline_lib.errors import UserError
from pipeline_lib.home import runs_dir


@dataclass(frozen=True)
class RunLayout:
    root: Path
    config_hash: str

    @property
    def name(self) -> str:
        return self.root.name

    def stage(self, stage: str, round_index: int | None = None) -> Path:
        """A stage's folder; stages outside any round (data prep) live under ``shared/``."""
        group = "shared" if round_index is None else f"round-{round_index}"
        return self.root / group / stage

    def scratch(self, stage_dir: Path) -> Path:
        """A persistent scratch folder beside a stage (shards survive a crash of the stage)."""
        return stage_dir.with_name(stage_dir.name + ".partial")


def open_run(recipe: Recipe) -> RunLayout:
    digest = config_hash(recipe)
    root = runs_dir() / f"{recipe.name}-{digest[:10]}"
    save_resolved(recipe, root)
    return RunLayout(root=root, config_hash=digest)


def stages_to_force(stages: list[str], from_stage: str | None) -> set[str]:
    """``--from-stage NAME``: that stage and every later one, in the flow's order."""
    if from_stage is None:
        return set()
    if from_stage not in stages:
        raise UserError(f"--from-stage {from_stage!r} is not a stage of this flow; stages: {', '.join(stages)}")
    return set(stages[stages.index(from_stage) :])
