"""Stage calls that several methods make: the suite, sampling, scoring, training, evaluation, the reviser.

Each function is a stage call (or a few) in a run's context; the stages
themselves are declared in ``tasks/``. Method flows import these, never
each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from methods.benchmarks import benchmark_jobs, benchmark_results
from methods.data import budget
from methods.jobs import at_once
from pipeline_lib.data.prepare import ROWS_FILE
from pipeline_lib.data.sources import source_identities
from pipeline_lib.models.chat_template import template_text
from pipeline_lib.revision.reviser_data import ADAPTIVE_FILE, WARMUP_FILE
from pipeline_lib.sampling import SamplingParams
from pipeline_lib.suite.intervals import interval_metrics, score_interval
from tasks.context import RunContext
from tasks.data import log_prepared, prepare_data, prepare_suite, take_prompts
from tasks.evaluation import log_round, score, score_samples_stage
from tasks.models import provision_model, set_chat_template
from tasks.revision import log_reviser, reviser_data, revise
from tasks.sampling import generate_answers, sample_policy
from tasks.stage import Stage
from tasks.training import train_policy, train_reviser, warmup_reviser


SUITE_JOB = "suite"  # the suite's job among a round's evaluations; benchmark keys never take this name


def suite_items(ctx: RunContext, split: str, label: str, round_index: int | None = None, start: int = 0, stop: int | None = None) -> str:
    """One split of the built-in suite, or its items ``start:stop``; linked as ``prepare-suite-<label>``."""
    suite = ctx.recipe.suite
    size = suite.n_eval if split == "eval" else suite.n_train
    return ctx.run(prepare_suite, round_index, label=label, suite=suite, split=split, size=size, start=start, stop=stop)


def training_prompts(ctx: RunContext) -> str:
    """The suite train items the objective methods learn from (``prompts``)."""
    recipe = ctx.recipe
    return suite_items(ctx, "train", "train", None, recipe.prompts.start, recipe.prompts.stop(recipe.suite.n_train))


# (MLflow run, role): what a run has already said and logged of a role, once per run though a method
# may ask for a role more than once (SPIN, every iteration).
_SAID: set[tuple[str, str]] = set()


def user_data(ctx: RunContext, role: str) -> str | None:
    """The prepared ``data.<role>`` folder, or None when the recipe leaves the role to the built-in suite.

    Decontaminated against the held-out suite, the evaluation set every method uses.
    """
    recipe = ctx.recipe
    sources = recipe.data.roles().get(role) if recipe.data else None
    if not sources:
        if _first_time(ctx, role):
            print(f"data.{role} is not set: {recipe.method} uses the built-in suite instead", file=sys.stderr, flush=True)
        return None
    files, hub = source_identities(sources)
    model = starting_model(ctx)
    prepared = ctx.run(
        prepare_data, label=role, role=role, sources=sources, files=files, hub=hub, settings=recipe.data,
        model=model, budget=budget(recipe, model, role), eval_sets={"suite-eval": suite_items(ctx, "eval", "eval")},
        seed=recipe.seed,
    )  # fmt: skip
    if _first_time(ctx, role):
        log_prepared(ctx.parent, prepared, role, sources)
    return prepared


def _first_time(ctx: RunContext, role: str) -> bool:
    seen = (ctx.parent, role) in _SAID
    _SAID.add((ctx.parent, role))
    return not seen


def data_inputs(role: str, prepared: str | None) -> dict[str, str] | None:
    """A prepared role as the round run logs it, an input of the run that trains on it (None: the suite)."""
    return {f"data-{role}": str(Path(prepared) / ROWS_FILE)} if prepared else None


def prompt_slice(ctx: RunContext, prepared: str, round_index: int | None, label: str, start: int, stop: int) -> str:
    """Rows ``start:stop`` of a prepared role, as prompts to sample; linked as ``take-prompts-<label>``."""
    return ctx.run(take_prompts, round_index, label=label, prepared=prepared, start=start, stop=stop)


def answer(ctx: RunContext, stage: Stage, round_index: int | None, model: str, items: str, params: SamplingParams, batch_size: int) -> str:
    return ctx.run(
        stage, round_index, model=model, items=items, params=params, backend=ctx.backend, dtype=ctx.dtype,
        sampler=ctx.sampler, batch_size=batch_size,
    )  # fmt: skip


def policy_samples(ctx: RunContext, round_index: int | None, model: str, items: str, **params: Any) -> str:
    """The policy's samples of ``items``: the ``sampler`` settings, ``params`` (n, seed...) overriding."""
    sampling = SamplingParams.from_config(ctx.recipe.sampler, **params)
    return answer(ctx, sample_policy, round_index, model, items, sampling, ctx.recipe.sampler.batch_size)


def sample_scores(ctx: RunContext, round_index: int | None, items: str, samples: str) -> str:
    """The verifier's scores of the policy's samples."""
    return ctx.run(score_samples_stage, round_index, items=items, samples=samples)


def train(ctx: RunContext, stage: Stage, round_index: int | None, model: str, rows: str, config: Any, seed: int) -> str:
    """Fine-tune ``model`` on the rows file ``rows`` with the train section ``config``."""
    return ctx.run(stage, round_index, model=model, rows=rows, train=config, seed=seed, dtype=ctx.dtype)


def train_round(ctx: RunContext, k: int, model: str, rows: str, config: Any = None) -> str:
    """Round k's policy update: ``train`` (or ``config``) on ``rows``, with round k's seed."""
    return train(ctx, train_policy, k, model, rows, config or ctx.recipe.train, ctx.seed("train", k))


def evaluate_round(
    ctx: RunContext,
    model: str,
    k: int,
    trained: bool = False,
    outputs: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    tables: Mapping[str, list[dict]] | None = None,
    datasets: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Greedy answers on the held-out split, verified, and logged as round k with what the method adds.

    ``trained``: ``model`` is this round's training output, so its loss and
    throughput are logged too.
    """
    recipe = ctx.recipe
    items = suite_items(ctx, "eval", "eval")
    # The suite and each benchmark depend on nothing but the model: with ``orchestration``, all at once.
    jobs = {SUITE_JOB: (suite_answers, (model, k, items)), **benchmark_jobs(ctx, model, k, items)}
    done = at_once(ctx, jobs, f"evaluation/round-{k}")
    samples, scores = done.pop(SUITE_JOB)
    start = ctx.layout.stage(score.name, 0)
    if k > 0 and start.exists():
        # Against round 0 on the same prompts, so the table and MLflow say whether a change is more than noise.
        interval = score_interval(scores, start, recipe.eval.intervals, ctx.seed("interval", k))
        metrics = {**(metrics or {}), **interval_metrics(interval)}
    bench = benchmark_results(ctx, k, done)
    if bench.outputs:
        metrics, tables = {**(metrics or {}), **bench.metrics}, {**(tables or {}), **bench.tables}
        outputs = {**(outputs or {}), **{f"benchmark-{key}": folder for key, folder in bench.outputs.items()}}
    trained_model = model if trained else None
    return log_round(ctx.parent, k, scores, items, trained_model, outputs, metrics, tables, datasets, bench.artifacts)


def suite_answers(ctx: RunContext, model: str, k: int, items: str) -> tuple[str, str]:
    """Round k's greedy answers to the held-out suite items, and their scores."""
    recipe = ctx.recipe
    params = SamplingParams(temperature=0.0, max_new_tokens=recipe.eval.max_new_tokens, seed=recipe.seed)
    samples = answer(ctx, generate_answers, k, model, items, params, recipe.eval.batch_size)
    return samples, ctx.run(score, k, items=items, samples=samples)


def starting_model(ctx: RunContext) -> str:
    """The recipe's model, with ``model.chat_template`` set on it when the recipe gives one."""
    model, template = provision_model(ctx.recipe.model.ref), ctx.recipe.model.chat_template
    return ctx.run(set_chat_template, model=model, template=template_text(template)) if template else model


def one_round(ctx: RunContext, round_body: Callable[[RunContext, int, str], tuple[str, dict[str, float]]]) -> tuple[str, dict]:
    """Round 0 on the starting model, then ``round_body(ctx, 1, model) -> (new policy, its metrics)``.

    The whole body of the methods that train once (SFT, IFT, DPO, RFT, FIGA).
    """
    model = starting_model(ctx)
    rounds = {0: evaluate_round(ctx, model, 0)}
    model, rounds[1] = round_body(ctx, 1, model)
    return model, rounds


def build_reviser(ctx: RunContext, base_model: str) -> str:
    """Graded samples -> decision-labelled data -> warm-up -> adaptive training; returns the reviser's folder."""
    recipe, reviser = ctx.recipe, ctx.recipe.reviser
    scores = None
    if reviser.n_prompts:
        items = suite_items(ctx, "train", "reviser", None, 0, reviser.n_prompts)
        temperature = recipe.sampler.temperature if reviser.temperature is None else reviser.temperature
        samples = policy_samples(
            ctx, None, base_model, items, n=reviser.samples_per_prompt, seed=ctx.seed("reviser-source"), temperature=temperature
        )
        scores = sample_scores(ctx, None, items, samples)
    preference = user_data(ctx, "preference")
    data = ctx.run(reviser_data, scores=scores, preference=preference, reviser=reviser, seed=recipe.seed)
    start = provision_model(reviser.model) if reviser.model else base_model
    warm = train(ctx, warmup_reviser, None, start, str(Path(data) / WARMUP_FILE), reviser.warmup, recipe.seed)
    trained = train(ctx, train_reviser, None, warm, str(Path(data) / ADAPTIVE_FILE), reviser.train, recipe.seed)
    log_reviser(ctx.parent, data, warm, trained)
    return trained


def revise_policy_samples(ctx: RunContext, k: int, reviser: str, samples: str, items: str) -> str:
    """The reviser's decision and revision for every sample (SEFT's rounds, FIGA's revised answers)."""
    recipe = ctx.recipe
    return ctx.run(
        revise, k, reviser=reviser, samples=samples, items=items, max_new_tokens=recipe.reviser.max_new_tokens,
        backend=ctx.backend, dtype=ctx.dtype, seed=recipe.seed, sampler=ctx.sampler, batch_size=recipe.reviser.batch_size,
    )  # fmt: skip
