"""The full recipe schema: the common sections plus every registered method's, and loading it.

The schema is assembled from ``methods.METHODS`` and ``methods.SECTIONS``, so a
new method's section and name are known to every recipe without editing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import create_model, model_validator

from methods import METHODS, SECTIONS
from pipeline_lib.benchmarks.config import SuiteBenchmark
from pipeline_lib.config import RecipeBase, read_raw_recipe, validate_with
from pipeline_lib.suite.config import PromptsConfig
from methods.data import replaces_suite_prompts


class _MethodRules(RecipeBase):
    """What the registry says about the recipe's method: its default sections, objectives and checks."""

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("method") not in METHODS:
            return raw
        method = METHODS[raw["method"]]
        raw = method.defaults(raw)
        if method.objectives:
            train = dict(raw.get("train") or {})
            train.setdefault("objective", method.objectives[0])
            raw = {**raw, "train": train}
        return raw

    @model_validator(mode="after")
    def _method_sections(self) -> Any:
        """Another method's sections are a mistake, not something to ignore silently."""
        method = METHODS[self.method]
        if method.objectives and self.train.objective not in method.objectives:
            allowed = " or ".join(map(repr, method.objectives))
            raise ValueError(f"method {self.method!r} trains with objective {allowed}, not train.objective {self.train.objective!r}")
        for section in SECTIONS:
            if getattr(self, section) is not None and section not in method.sections:
                owners = " or ".join(repr(m.name) for m in METHODS.values() if section in m.sections)
                raise ValueError(f"section '{section}' is only used by method {owners}, not {self.method!r}")
        if self.data is not None:
            for role in self.data.set_roles():
                if role not in method.roles:
                    reads = f"it reads data.{', data.'.join(method.roles)}" if method.roles else "it reads no data role"
                    raise ValueError(f"data.{role} is not read by method {self.method!r} ({reads})")
        method.check(self)
        if self.orchestration is not None and self.method != "compare" and all(isinstance(e, SuiteBenchmark) for e in self.eval.entries()):
            raise ValueError(
                "orchestration runs a round's evaluations at once (the suite beside each entry of eval.benchmarks); "
                "this recipe has no benchmark besides the suite: remove it"
            )
        given = [
            role for role in (self.data.roles() if self.data else {})
            if role in method.roles and replaces_suite_prompts(self.method, role)
        ]  # fmt: skip
        if method.trains_on_prompts and given and self.prompts != PromptsConfig():
            raise ValueError(f"the prompts section picks suite items, which data.{given[0]} replaces: remove it")
        if method.trains_on_prompts and not given:
            stop = self.prompts.stop(self.suite.n_train)
            if stop > self.suite.n_train:
                raise ValueError(f"prompts.start + prompts.count ({stop}) exceeds suite.n_train ({self.suite.n_train})")
            if self.prompts.start >= self.suite.n_train:
                raise ValueError(f"prompts.start ({self.prompts.start}) must be below suite.n_train ({self.suite.n_train})")
        return self


Recipe = create_model(
    "Recipe",
    __base__=_MethodRules,
    method=(Literal[tuple(METHODS)], "evaluate"),
    **{name: (model | None, None) for name, model in SECTIONS.items()},
)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read a YAML recipe, apply `a.b=value` overrides, validate. Errors name the key."""
    return validate_recipe(read_raw_recipe(path, overrides), origin=str(path))


def validate_recipe(raw: dict[str, Any], origin: str = "recipe") -> Any:
    return validate_with(Recipe, raw, origin)
