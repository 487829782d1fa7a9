"""The stage calls behind ``eval.benchmarks``: every entry other than the suite, for one round's model.

Each entry is a job of its own (``benchmark_jobs``): the entries of a round
depend on nothing but the round's model, so they may run at once
(``methods.jobs.at_once``). Their folders then give, in this process and in
the recipe's order, metrics (stepped by round), a table of judgments per
round and the stage folders the round's MLflow child run is identified by.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_lib import tracking
from pipeline_lib.benchmarks.config import LmEvalBenchmark, MTBenchBenchmark, PairwiseBenchmark, benchmark_key
from pipeline_lib.benchmarks.judge import EndpointJudge
from pipeline_lib.benchmarks.bootstrap import bootstrap_mean, paired_bootstrap
from pipeline_lib.data.sources import source_identities
from pipeline_lib.reporting.metrics import metric
from pipeline_lib.sampling import SamplingParams
from tasks.benchmarks import (
    baseline_outputs,
    benchmark_prompts,
    lm_eval_stage,
    mt_bench_answers,
    mt_bench_judgments,
    pairwise_judgments,
    read_benchmark_metrics,
    read_item_scores,
    read_judge,
)
from tasks.context import RunContext
from tasks.models import provision_model
from tasks.sampling import generate_answers

TABLE_ROWS = 400
# (MLflow parent run, what): done once per run (the judge params of a benchmark, the endpoint check).
_ONCE: set[tuple[str, str]] = set()


@dataclass
class BenchmarkResults:
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # file -> the round run's artifact folder


def benchmark_jobs(ctx: RunContext, model: str, k: int, suite_eval: str) -> dict[str, tuple[Any, tuple]]:
    """Round k's job for each non-suite entry of ``eval.benchmarks``, by its key: its stages up to its folder."""
    _check_endpoint(ctx)
    return {benchmark_key(entry): (run_benchmark, (entry, model, k, suite_eval)) for entry in _entries(ctx)}


def run_benchmark(ctx: RunContext, entry: Any, model: str, k: int, suite_eval: str) -> str | None:
    """One entry's stages on round k's ``model``; its last stage's folder (None: nothing to judge this round)."""
    if isinstance(entry, MTBenchBenchmark):
        return _mt_bench(ctx, entry, model, k)
    if isinstance(entry, PairwiseBenchmark):
        return _pairwise(ctx, entry, model, k)
    return _lm_eval(ctx, entry, model, k, suite_eval)


def benchmark_results(ctx: RunContext, k: int, folders: dict[str, str | None]) -> BenchmarkResults:
    """What round k logs from its benchmarks' folders (by key), in the recipe's order."""
    results = BenchmarkResults()
    for entry in _entries(ctx):
        key = benchmark_key(entry)
        folder = folders[key]
        if folder is None:
            continue
        judged_by = read_judge(folder)
        if judged_by and (ctx.parent, key) not in _ONCE:
            # The judge and its prompt versions, as params: every judgment of the run was made by them.
            tracking.log_config({"benchmark": {key: judged_by}}, run_id=ctx.parent)
            _ONCE.add((ctx.parent, key))
        results.metrics.update(read_benchmark_metrics(folder))
        results.metrics.update(_intervals(ctx, entry, key, k, folder))
        results.outputs[key] = folder
        results.artifacts |= {str(f): key for f in Path(folder).glob("*.json")}
        table = _table(folder)
        if table is not None:
            results.tables[f"{key}_judgments_round{k}.json"] = table
    return results


def _entries(ctx: RunContext) -> list[Any]:
    return [e for e in ctx.recipe.eval.entries() if isinstance(e, (MTBenchBenchmark, PairwiseBenchmark, LmEvalBenchmark))]


def _check_endpoint(ctx: RunContext) -> None:
    """An endpoint judge that does not answer, or serves another model, stops the run before any answer is made."""
    judge = ctx.recipe.eval.judge
    if judge is not None and judge.base_url and (ctx.parent, "endpoint") not in _ONCE:
        EndpointJudge(judge)
        _ONCE.add((ctx.parent, "endpoint"))


def _judge_args(ctx: RunContext) -> dict[str, Any]:
    judge = ctx.recipe.eval.judge
    return {
        "judge": judge, "judge_model": provision_model(judge.model) if judge.model else None,
        "backend": ctx.backend, "dtype": ctx.dtype, "sampler": ctx.sampler, "seed": ctx.recipe.seed,
    }  # fmt: skip


def _mt_bench(ctx: RunContext, entry: MTBenchBenchmark, model: str, k: int) -> str:
    answers = ctx.run(
        mt_bench_answers, k, model=model, questions=entry.questions, limit=entry.limit, max_new_tokens=entry.max_new_tokens,
        seed=ctx.recipe.seed, backend=ctx.backend, dtype=ctx.dtype, sampler=ctx.sampler, batch_size=ctx.recipe.eval.batch_size,
    )  # fmt: skip
    return ctx.run(
        mt_bench_judgments, k, answers=answers, references=entry.references, judge_prompts=entry.judge_prompts,
        rating_fallback=entry.rating_fallback, **_judge_args(ctx),
    )  # fmt: skip


def _pairwise(ctx: RunContext, entry: PairwiseBenchmark, model: str, k: int) -> str | None:
    key = benchmark_key(entry)
    files, hub = source_identities([entry.prompts])
    items = ctx.run(benchmark_prompts, label=key, source=entry.prompts, files=files, hub=hub, limit=entry.limit)
    answers = _answers(ctx, entry, key, k, model, items)
    baseline = _baseline(ctx, entry, key, k, items)
    if baseline is None:
        return None
    return ctx.run(
        pairwise_judgments, k, label=key, items=items, answers=answers, baseline=baseline, template=entry.template,
        orders=entry.orders, preference=entry.preference, prefix=key, **_judge_args(ctx),
    )  # fmt: skip


def _answers(ctx: RunContext, entry: PairwiseBenchmark, key: str, k: int, model: str, items: str, label: str | None = None) -> str:
    params = SamplingParams(temperature=0.0, max_new_tokens=entry.max_new_tokens, seed=ctx.recipe.seed)
    return ctx.run(
        generate_answers, k, label=label or key, model=model, items=items, params=params, backend=ctx.backend,
        dtype=ctx.dtype, sampler=ctx.sampler, batch_size=ctx.recipe.eval.batch_size,
    )  # fmt: skip


def _baseline(ctx: RunContext, entry: PairwiseBenchmark, key: str, k: int, items: str) -> str | None:
    baseline = entry.baseline
    if baseline.outputs is not None:
        files, hub = source_identities([baseline.outputs])
        return ctx.run(baseline_outputs, label=key, items=items, source=baseline.outputs, files=files, hub=hub)
    if baseline.model in ("round0", "previous"):
        if k == 0:
            print(f"eval.benchmarks {key}: round 0 is its own baseline ({baseline.model}); judged from round 1", file=sys.stderr)
            return None
        # That round's answers to the same prompts, as its link in the run folder (rounds run in order, and a
        # round Prefect reattaches on a retry has its links from before).
        return str(ctx.layout.stage(f"{generate_answers.name}-{key}", 0 if baseline.model == "round0" else k - 1).resolve())
    return _answers(ctx, entry, key, k, provision_model(str(baseline.model)), items, label=f"{key}-baseline")


def _lm_eval(ctx: RunContext, entry: LmEvalBenchmark, model: str, k: int, suite_eval: str) -> str:
    return ctx.run(
        lm_eval_stage, k, model=model, items=suite_eval if "alignflow_suite" in entry.tasks else None, tasks=entry.tasks,
        include_path=entry.include_path, limit=entry.limit, num_fewshot=entry.num_fewshot, max_new_tokens=entry.max_new_tokens,
        backend=ctx.backend, dtype=ctx.dtype, sampler=ctx.sampler, seed=ctx.recipe.seed, batch_size=ctx.recipe.eval.batch_size,
    )  # fmt: skip


def _intervals(ctx: RunContext, entry: Any, key: str, k: int, folder: str) -> dict[str, float]:
    """A win rate against parity, and round k against round 0 on the same items: seeded paired bootstraps."""
    settings = ctx.recipe.eval.intervals
    options = {"resamples": settings.resamples, "confidence": settings.confidence} if settings else {}
    scores = read_item_scores(folder)
    out = {}
    if isinstance(entry, PairwiseBenchmark) and any(v is not None for v in scores.values()):
        win = bootstrap_mean(list(scores.values()), null=0.5, seed=ctx.seed("interval", key, k), **options)
        out |= {metric(key, "win_rate_low"): win.low, metric(key, "win_rate_high"): win.high}
    start = ctx.layout.stage(_link_name(entry, key), 0)
    if k > 0 and start.exists():
        before = read_item_scores(start)
        shared = sorted(set(scores) & set(before))
        if any(scores[i] is not None and before[i] is not None for i in shared):
            delta = paired_bootstrap([scores[i] for i in shared], [before[i] for i in shared], seed=ctx.seed("interval", key, k), **options)
            out |= {metric(key, "delta"): delta.difference, metric(key, "delta_low"): delta.low, metric(key, "delta_high"): delta.high}
    return out


def _link_name(entry: Any, key: str) -> str:
    """Where a benchmark's last stage is linked in a round's folder."""
    if isinstance(entry, MTBenchBenchmark):
        return mt_bench_judgments.name
    if isinstance(entry, PairwiseBenchmark):
        return f"{pairwise_judgments.name}-{key}"
    return lm_eval_stage.name


def _table(folder: str) -> list[dict] | None:
    import pyarrow.parquet as pq

    path = Path(folder) / "judgments.parquet"
    if not path.is_file():
        return None
    return pq.read_table(path).slice(0, TABLE_ROWS).to_pylist()
