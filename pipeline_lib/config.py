"""Recipes: the sections every method shares, YAML loading, dotted overrides, hashing.

Each section's model lives with the package that reads it (``sampling/config.py``,
``training/config.py``...); a method's own sections live in its folder under
``methods/``, whose registry assembles the full schema (``methods.recipe``).
A recipe is validated strictly (unknown keys are errors) because a typo in a
hyperparameter that is silently ignored costs a whole training run.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.hashing import hash_json
from pipeline_lib.core.section import Section
from pipeline_lib.data.config import DataConfig
from pipeline_lib.models.config import ModelConfig
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store import atomic_write_text
from pipeline_lib.suite.config import EvalConfig, PromptsConfig, SuiteConfig
from pipeline_lib.tracking.config import TrackingConfig
from pipeline_lib.training.config import TrainConfig


class RecipeBase(Section):
    """What every recipe has; ``methods.recipe.Recipe`` adds the methods' sections."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    method: str = "evaluate"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    suite: SuiteConfig = Field(default_factory=SuiteConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    data: DataConfig | None = None
    # Where independent work runs (a thread pool, a Ray cluster); unset: one after another, as always.

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Settings that cannot change any output; leaving them out of the hash lets a
# user point a finished run at another MLflow server, give vLLM more cache, or
# spread the work over more replicas or a cluster, without recomputing it.
OUTPUT_NEUTRAL = ("tracking", "sampler.vllm", "sampler.base_url", "sampler.base_urls", "sampler.replicas", "orchestration")
# Settings added since runs were first named: hashed only when set, so existing recipes keep their run names.
HASHED_WHEN_SET = ("data", "model.chat_template", "eval.intervals", "eval.benchmarks", "eval.judge")
# The method sections recipes had before the method registry: hashed even when
# unset, as they always were. A section added since counts only when it is set,
# so adding a method never renames the runs of existing recipes.
SECTIONS_HASHED_WHEN_UNSET = ("reviser", "seft", "spin", "figa", "compare", "cel")


def config_hash(recipe: RecipeBase) -> str:
    dumped = recipe.to_dict()
    for dotted in OUTPUT_NEUTRAL + HASHED_WHEN_SET:
        *parents, name = dotted.split(".")
        node = dumped
        for part in parents:
            node = node.get(part, {})
        if dotted in OUTPUT_NEUTRAL or node.get(name, 0) is None:
            node.pop(name, None)
    for section in set(dumped) - set(SECTIONS_HASHED_WHEN_UNSET):
        if dumped[section] is None:
            del dumped[section]
    return hash_json(dumped)


def read_raw_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML recipe as a mapping, with `a.b=value` overrides applied; not yet validated."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a recipe file (give a YAML file such as configs/seft.yaml)")
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(raw, item)
    return raw


def validate_with(schema: type[BaseModel], raw: dict[str, Any], origin: str = "recipe") -> Any:
    """``schema.model_validate(raw)``, its errors as one line that names each key."""
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{origin}: " + "; ".join(_describe(schema, e) for e in err.errors())) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the raw mapping; the value is parsed as YAML (so 3, 1e-5, true, [1,2])."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {item!r} must look like section.key=value")
    value = yaml.safe_load(text) if text.strip() else ""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, list) and len(child) == 1 and isinstance(child[0], dict):
            child = child[0]  # a data role of one source, as a parsed recipe lists it
        if not isinstance(child, dict):
            raise UserError(f"override {item!r}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(schema: type[BaseModel], error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "recipe"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'" + _suggestion(schema, error["loc"])
    if error["type"] == "missing":
        return f"missing required key '{where}'"
    if error["type"] == "value_error":
        # Our own checks already word the problem; the whole input would only bury it.
        return f"bad value for '{where}': {error['msg'].removeprefix('Value error, ')}"
    return f"bad value for '{where}': {error['msg']} (got {error.get('input')!r})"


def _suggestion(schema: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Name the valid keys of the section the typo sits in, best match first."""
    model = schema
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return ""
        model = nested[0]
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} (valid: {', '.join(valid)})"


def save_resolved(recipe: RecipeBase, folder: Path) -> str:
    """Write the resolved recipe and its hash next to a run's outputs; return the hash."""
    digest = config_hash(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    atomic_write_text(folder / "config.sha256", digest + "\n")
    return digest
