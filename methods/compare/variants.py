"""``compare-methods``: one recipe per contestant, derived from the comparison recipe.

Every variant starts from the same model, trains on the same prompts (SEFT's
unannotated pool: items ``reviser.n_prompts`` on, ``seft.pool_prompts`` of
them, the same every round) and gets the same training-token budget, split
evenly over its training rounds (SPIN's iterations, SEFT's rounds). The
reviser SEFT and FIGA share is trained once and is not counted in it: it
trains the reviser, not the policy.
"""

from __future__ import annotations

import copy
from typing import Any

from methods import METHODS, SECTIONS
from methods.compare.config import MethodVariant
from methods.recipe import Recipe, validate_recipe
from pipeline_lib.config import apply_override
from methods.data import replaces_suite_prompts
from pipeline_lib.data.config import DATA_ROLES
from pipeline_lib.core.errors import UserError


def variant_recipe(compare: Recipe, variant: MethodVariant, results: dict[str, str]) -> Recipe:
    """The recipe ``variant`` runs: the comparison's settings, its method's sections, its overrides.

    ``results`` maps ``base`` and the labels already run to model folders, for
    ``@name`` in override values (SEFT + OnDARE takes τ from ``@sft``).
    """
    raw = copy.deepcopy(compare.to_dict())
    raw.pop("compare")
    raw["method"], raw["name"] = variant.method, f"{compare.name}-{variant.label}"
    # The comparison's orchestration runs its contestants at once; a contestant's own evaluations run in order.
    kept = set(METHODS[variant.method].sections) - {"orchestration"}
    for section in SECTIONS:
        if section not in kept or raw.get(section) is None:
            raw.pop(section, None)
    if variant.method == "figa" and (raw.get("figa") or {}).get("revised_from") == "reference":
        raw.pop("reviser", None)
    raw["train"].pop("objective", None)
    if raw.get("data"):
        # The comparison's datasets, each to the contestants whose method reads it (the others use the suite).
        raw["data"] = {k: v for k, v in raw["data"].items() if k not in DATA_ROLES or k in METHODS[variant.method].roles}
    for item in variant.overrides:
        apply_override(raw, _substitute(item, results, variant.label))
    own_prompts = any(item.startswith("prompts.") for item in variant.overrides)
    if compare.seft is not None and compare.reviser is not None and not own_prompts and not _trains_on_user_data(raw):
        raw["prompts"] = {"start": compare.reviser.n_prompts, "count": compare.seft.pool_prompts}
        if "seft" in raw:
            raw["seft"]["fresh_prompts"] = False
    origin = f"compare.methods[{variant.label}]"
    recipe = validate_recipe(raw, origin=origin)
    if compare.compare.token_budget is not None:
        rounds = METHODS[recipe.method].training_rounds(recipe)
        raw["train"]["max_tokens"] = max(1, compare.compare.token_budget // rounds)
        recipe = validate_recipe(raw, origin=origin)
    return recipe


def _trains_on_user_data(raw: dict[str, Any]) -> bool:
    """Whether the contestant's training rows come from the user's data instead of the shared suite prompts."""
    return any(
        value not in (None, "suite", [{"source": "suite"}]) and replaces_suite_prompts(raw["method"], role)
        for role, value in (raw.get("data") or {}).items()
        if role in DATA_ROLES
    )


def contestant_needs(variants: list[MethodVariant]) -> dict[str, set[str]]:
    """Which earlier contestants each contestant's overrides name (``@sft``); ``@base`` is not one.

    Contestants that need nothing of each other may run at once
    (``orchestration``); one that names a later contestant, or no contestant,
    fails here as it would when run in order.
    """
    seen: list[str] = []
    needs: dict[str, set[str]] = {}
    for variant in variants:
        named = set()
        for item in variant.overrides:
            key, sep, value = item.partition("=")
            if sep and value.startswith("@") and value[1:] != "base":
                if value[1:] not in seen:
                    raise UserError(
                        f"compare.methods[{variant.label}]: override {item!r} names {value}, which has not run before it; "
                        f"available: {', '.join('@' + n for n in ['base', *seen])}"
                    )
                named.add(value[1:])
        needs[variant.label] = named
        seen.append(variant.label)
    return needs


def _substitute(item: str, results: dict[str, str], label: str) -> str:
    key, sep, value = item.partition("=")
    if sep and value.startswith("@"):
        name = value[1:]
        if name not in results:
            raise UserError(
                f"compare.methods[{label}]: override {item!r} names {value}, which has not run before it; "
                f"available: {', '.join('@' + n for n in results)}"
            )
        return f"{key}={results[name]}"
    return item
