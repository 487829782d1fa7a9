"""The methods alignflow runs, one folder each, and the registry that lists them.

A method's folder holds its recipe section (``config.py``), the library code
that is its own (row building, steps, reports) and its flow (``flow.py``, the
one file that imports Prefect). ``METHODS`` below is the only list of them:
the recipe schema, ``alignflow run``, compare-methods, the deployments and
the tests all read it. Adding a method is a folder and one entry here
(docs/architecture.md walks through ``methods/rft``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from methods.cel.config import CelConfig
from methods.compare.config import CompareConfig
from methods.figa.config import FigaSourceConfig
from methods.rft.config import RftConfig
from methods.seft.config import SeftConfig
from methods.spin.config import SpinConfig
from pipeline_lib.core.orchestration import OrchestrationConfig
from pipeline_lib.core.section import Section
from pipeline_lib.revision.config import ReviserConfig

Raw = dict[str, Any]


@dataclass(frozen=True)
class Method:
    """One registry entry.

    ``sections``: the recipe sections the method reads besides the common
    ones (another method's section in its recipe is an error); ``defaults``
    fills the raw recipe before validation (sections it always has);
    ``objectives``: the ``train.objective`` values it fine-tunes with, the
    first being the default (empty: any); ``check``: cross-section rules;
    ``training_rounds``: how many times it trains the policy (compare-methods
    splits its token budget over them); ``contestant``: it can run in
    compare-methods; ``leaderboard``: which one its contestants go on, the
    suite's (held-out scores) or the games' (CEL's success rates), never
    mixed in one comparison; ``roles``: the ``data`` roles it reads (a role
    set in the recipe that the method does not read is an error).
    """

    name: str
    flow: str  # "module:attribute", imported only when the method runs
    summary: str
    sections: tuple[str, ...] = ()
    defaults: Callable[[Raw], Raw] = lambda raw: raw
    objectives: tuple[str, ...] = ()
    check: Callable[[Any], None] = lambda recipe: None
    training_rounds: Callable[[Any], int] = lambda recipe: 1
    contestant: bool = False
    leaderboard: str = "suite"  # "suite" or "games" (methods/compare/leaderboard.py BOARDS)
    trains_on_prompts: bool = False
    roles: tuple[str, ...] = ()
    example: str = ""  # the recipe `alignflow serve` deploys on demand; default configs/<name>.yaml

    @property
    def example_recipe(self) -> str:
        return self.example or f"configs/{self.name}.yaml"

    def load_flow(self) -> Any:
        module, attribute = self.flow.split(":")
        return getattr(importlib.import_module(module), attribute)

    def load_body(self) -> Any:
        """The flow module's ``run(ctx) -> (final model, metrics per round)``, which compare-methods calls."""
        return importlib.import_module(self.flow.split(":")[0]).run

    @property
    def flow_entrypoint(self) -> str:
        """The flow as a deployment names it: ``methods/seft/flow.py:seft_flow``."""
        module, attribute = self.flow.split(":")
        return f"{module.replace('.', '/')}.py:{attribute}"


# Every method section's model, by the section name recipes use.
SECTIONS: dict[str, type[Section]] = {
    "reviser": ReviserConfig,
    "seft": SeftConfig,
    "spin": SpinConfig,
    "figa": FigaSourceConfig,
    "rft": RftConfig,
    "compare": CompareConfig,
    "orchestration": OrchestrationConfig,
    "cel": CelConfig,
}


# Sections every method that evaluates prompts reads: ``orchestration`` runs a round's evaluations at once.
EVALUATES = ("orchestration",)


def present(*sections: str) -> Callable[[Raw], Raw]:
    """Defaults that give a recipe these sections (with their own defaults) when it leaves them out."""
    return lambda raw: {**{name: {} for name in sections}, **raw}


def _figa_defaults(raw: Raw) -> Raw:
    given = isinstance(raw.get("data"), dict) and raw["data"].get("revisions") not in (None, "suite", {"source": "suite"})
    figa = {"revised_from": "data" if given else "reviser", **(raw.get("figa") or {})}
    raw = {**raw, "figa": figa}
    if figa["revised_from"] == "reviser":
        raw = {"reviser": {}, **raw}
    return raw


def _figa_check(recipe: Any) -> None:
    source = recipe.figa.revised_from
    if source != "reviser" and recipe.reviser is not None:
        raise ValueError("section 'reviser' is only used by figa with figa.revised_from 'reviser'")
    if (source == "data") != _user_role(recipe, "revisions"):
        raise ValueError("figa.revised_from 'data' and data.revisions go together: set both or neither")
    for role in ("prompts", "preference"):
        if _user_role(recipe, role) and source != "reviser":
            raise ValueError(f"data.{role} is read by figa only with figa.revised_from 'reviser' (the reviser's prompts and pairs)")


def _user_role(recipe: Any, role: str) -> bool:
    return recipe.data is not None and role in recipe.data.roles()


def _seft_check(recipe: Any) -> None:
    if recipe.reviser.n_prompts == 0 and not _user_role(recipe, "preference"):
        raise ValueError("the reviser needs data: set reviser.n_prompts > 0 or data.preference")
    if _user_role(recipe, "prompts"):
        # The pool is the user's prompts (their number is checked once they are prepared); the suite only grades.
        if recipe.suite.n_train < recipe.reviser.n_prompts:
            raise ValueError(f"suite.n_train ({recipe.suite.n_train}) must cover reviser.n_prompts ({recipe.reviser.n_prompts})")
        return
    needed = recipe.reviser.n_prompts + recipe.seft.pool_end(recipe.seft.rounds)
    if recipe.suite.n_train < needed:
        what = "seft.pool_prompts × seft.rounds" if recipe.seft.fresh_prompts else "seft.pool_prompts"
        raise ValueError(f"suite.n_train ({recipe.suite.n_train}) must cover reviser.n_prompts + {what} ({needed})")


def _cel_check(recipe: Any) -> None:
    # CEL is evaluated by playing held-out games, not by answering prompts.
    if recipe.eval.benchmarks is not None or recipe.eval.judge is not None:
        raise ValueError("eval.benchmarks and eval.judge are not used by cel, which plays held-out games (cel.eval_episodes)")


def _compare_check(recipe: Any) -> None:
    if recipe.compare is None:
        raise ValueError("method 'compare' needs a 'compare' section listing the methods")
    boards = {METHODS[v.method].leaderboard: v.label for v in recipe.compare.methods}
    if len(boards) > 1:
        # CEL's success rates and the suite's scores measure different things; no row could rank both.
        raise ValueError(f"compare.methods: {' and '.join(boards.values())} go on different leaderboards "
                         f"({' and '.join(boards)}); compare them apart")
    if "games" in boards and recipe.compare.token_budget is not None:
        raise ValueError("compare.token_budget: game-playing contestants (cel) are not trained on a token budget; leave it unset")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("evaluate", "methods.evaluate.flow:evaluate_flow", "the held-out suite on the starting model",
               sections=EVALUATES),
        Method(
            "seft", "methods.seft.flow:seft_flow", "SEFT: an adaptive reviser improves the policy's samples, round after round",
            sections=("reviser", "seft", *EVALUATES), defaults=present("reviser", "seft"), objectives=("sft", "ift"),
            check=_seft_check, training_rounds=lambda r: r.seft.rounds, contestant=True, roles=("prompts", "preference"),
        ),
        Method("sft", "methods.sft.flow:sft_flow", "SFT on the reference answers (or data.sft)", objectives=("sft",),
               sections=EVALUATES, contestant=True, trains_on_prompts=True, roles=("sft",)),
        Method("ift", "methods.sft.flow:ift_flow", "IFT on the reference answers (or data.sft)", objectives=("ift",),
               sections=EVALUATES, contestant=True, trains_on_prompts=True, roles=("sft",)),
        Method("dpo", "methods.dpo.flow:dpo_flow",
               "DPO: reference answers against the policy's failing samples (or data.preference as given)",
               sections=EVALUATES, objectives=("dpo",), contestant=True, trains_on_prompts=True, roles=("preference",)),
        Method(
            "spin", "methods.spin.flow:spin_flow", "SPIN: K iterations of self-play against the reference answers",
            sections=("spin", *EVALUATES), defaults=present("spin"), objectives=("spin",),
            training_rounds=lambda r: r.spin.iterations, contestant=True, trains_on_prompts=True, roles=("sft",),
        ),
        Method(
            "figa", "methods.figa.flow:figa_flow", "FIGA: token weights from the policy's samples against their revisions",
            sections=("figa", "reviser", *EVALUATES), defaults=_figa_defaults, objectives=("figa",), check=_figa_check,
            contestant=True, trains_on_prompts=True, roles=("revisions", "prompts", "preference"),
        ),
        Method(
            "rft", "methods.rft.flow:rft_flow", "RFT: sample n, keep the answers the verifier passes, SFT on them",
            sections=("rft", *EVALUATES), defaults=present("rft"), objectives=("sft", "ift"), contestant=True, trains_on_prompts=True,
        ),
        Method(
            "compare", "methods.compare.flow:compare_methods", "compare-methods: contestants on one model, prompts and budget",
            # A comparison holds every contestant's settings and hands each variant its own.
            sections=("reviser", "seft", "spin", "figa", "rft", "cel", "compare", "orchestration"), check=_compare_check,
            roles=("prompts", "sft", "preference", "revisions"),
        ),
        Method("cel", "methods.cel.flow:cel_flow", "CEL: an agent learns a grid game by rewriting its rules",
               sections=("cel",), defaults=present("cel"), check=_cel_check, example="configs/cel-frozenlake.yaml",
               contestant=True, leaderboard="games"),
    )
}
