"""The one object a flow threads through its stages: what the run is and how its stages are forced."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline_lib.config import RecipeBase
from pipeline_lib.sampling import derive_seed
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store.runs import RunLayout, StageForcing
from tasks.stage import Stage


@dataclass(frozen=True)
class RunContext:
    """A pipeline run as its flow sees it.

    ``recipe`` is parsed once per command; ``parent`` is the MLflow run the
    rounds log under; ``forcing`` is ``--from-stage``; ``backend`` is the
    sampler backend resolved once for the run, and ``sampler`` the recipe's
    sampler settings pinned to it, so every generation stage uses the same one.
    """

    recipe: Any  # methods.recipe.Recipe; typed loosely because the schema is assembled from the method registry
    layout: RunLayout
    parent: str
    forcing: StageForcing
    backend: str

    @property
    def sampler(self) -> SamplerConfig:
        return self.recipe.sampler.model_copy(update={"backend": self.backend})

    @property
    def dtype(self) -> str:
        return self.recipe.model.dtype

    def seed(self, *parts: Any) -> int:
        """A seed for one purpose (``"round", k``), derived from the recipe's seed."""
        return derive_seed(self.recipe.seed, *parts)

    def run(self, stage: Stage, round_index: int | None = None, *, label: str | None = None, **args: Any) -> str:
        """Run (or reuse) ``stage`` on ``args``; the run folder links it as ``<round>/<stage>[-<label>]``."""
        name = f"{stage.name}-{label}" if label else stage.name
        return stage.run(self.layout.stage(name, round_index), self.forcing, **args)

    def variant(self, recipe: RecipeBase, layout: RunLayout, parent: str) -> RunContext:
        """The context a compare-methods contestant runs in: its own recipe, folder and MLflow run."""
        return replace(self, recipe=recipe, layout=layout, parent=parent)
