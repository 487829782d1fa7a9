"""Which rows of the user's data a recipe can use, as the flows prepare them and ``alignflow data inspect`` reports them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.prepare import Budget, prepare_role
from pipeline_lib.models import load_tokenizer, resolve_model
from pipeline_lib.models.loading import context_length
from pipeline_lib.suite.generate import generate_suite

# Methods whose data.preference only teaches the reviser: it is read through prompts built around each pair.
_REVISER_PREFERENCE = ("seft", "figa")


def replaces_suite_prompts(method: str, role: str) -> bool:
    """Whether the method's ``role`` takes the place of the suite items it would train on (``prompts`` section)."""
    return not (role == "preference" and method in _REVISER_PREFERENCE)


def length_limit(recipe: Any, role: str) -> int | None:
    """The longest row (in tokens) the recipe's trainer takes whole for ``role``; None for rows only sampled
    from, or rebuilt into longer ones (the reviser's), which their trainer cuts and counts instead."""
    if role == "prompts" or (role == "preference" and recipe.method in _REVISER_PREFERENCE):
        return None
    return recipe.train.max_length


def budget(recipe: Any, model: str | Path, role: str) -> Budget:
    """The sampler's prompt budget (its context less the answer's room) and the role's training length limit.

    The context is the model's, or vLLM's ``max_model_len`` when smaller, whichever backend runs: the same
    rows then fit every backend, and switching backends keeps the prepared data.
    """
    context = min(filter(None, (recipe.sampler.vllm.max_model_len, context_length(model))))
    return Budget(prompt_tokens=max(1, context - recipe.sampler.max_new_tokens), total_tokens=length_limit(recipe, role))


def inspect_role(recipe: Any, role: str) -> dict[str, Any]:
    """Prepare ``data.<role>`` as a run would, into a scratch folder, and return its report."""
    sources = recipe.data.roles().get(role) if recipe.data else None
    if not sources:
        raise UserError(f"data.{role} is not set in recipe {recipe.name!r}: the method uses the built-in suite there")
    model = resolve_model(recipe.model.ref)
    suite = recipe.suite
    eval_prompts = [item.prompt for item in generate_suite("eval", suite.n_eval, suite.seed, suite.families, suite.difficulty)]
    with tempfile.TemporaryDirectory() as folder:
        return prepare_role(
            role, sources, recipe.data, load_tokenizer(model), budget(recipe, model, role), eval_prompts, recipe.seed, Path(folder)
        )
