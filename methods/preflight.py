"""Checks of a recipe's inputs before its flow starts.

A data source is read only by the stage that needs it, possibly many minutes
in; a wrong path found here costs a second instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from methods.compare.variants import variant_recipe
from methods.compare.config import MethodVariant
from methods.recipe import Recipe
from pipeline_lib.data.sources import check_source
from pipeline_lib.core.errors import UserError


def check_data_sources(recipe: Recipe) -> None:
    """Fail on the first data source that cannot load (see ``check_source``), naming its recipe key."""
    checked = set()
    for key, source in data_sources(recipe):
        if source in checked:
            continue
        checked.add(source)
        try:
            check_source(source)
        except UserError as error:
            raise UserError(f"{key}: {error}") from None


def data_sources(recipe: Recipe) -> Iterator[tuple[str, str]]:
    """(recipe key, source) of every dataset the recipe reads, a comparison's contestants' included."""
    yield from _sources_in(recipe, "")
    if recipe.compare is not None:
        for variant in recipe.compare.methods:
            for key, source in data_sources(_contestant(recipe, variant)):
                yield f"compare.methods[{variant.label}]: {key}", source


def _sources_in(recipe: Recipe, prefix: str) -> Iterator[tuple[str, str]]:
    for role, sources in (recipe.data.roles() if recipe.data else {}).items():
        for index, source in enumerate(sources):
            yield f"{prefix}data.{role}[{index}].source" if len(sources) > 1 else f"{prefix}data.{role}.source", source.source


def _contestant(recipe: Recipe, variant: MethodVariant) -> Recipe:
    # Its overrides may set a source of their own. The models it names by @label exist only
    # once the comparison runs; the names, quoted for YAML, stand in for them: no model is checked here.
    placeholders = {name: f"'@{name}'" for name in ["base", *(other.label for other in recipe.compare.methods)]}
    return variant_recipe(recipe, variant, placeholders)
