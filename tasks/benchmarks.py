"""Benchmark stages: answers and judgments are separate stages, so ``--from-stage`` can re-judge without regenerating.

Judging stages are keyed by the judge's identity (its weights' digest, or its
endpoint and model name), the prompt files and the answers; inside, each
judgment is keyed again and kept in resumable shards.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_lib.benchmarks import mt_bench, pairwise
from pipeline_lib.benchmarks.config import JudgeConfig
from pipeline_lib.benchmarks.judge import EndpointJudge, Judge, describe_judge, judge_identity, open_local_judge
from pipeline_lib.benchmarks.judging import judge_all
from pipeline_lib.benchmarks.lm_eval_run import export_suite_task, run_lm_eval
from pipeline_lib.benchmarks.prompts import load_alpaca_template, load_judge_prompts, load_questions, load_references
from pipeline_lib.core.errors import UserError
from pipeline_lib.data.config import DataSource
from pipeline_lib.data.items import read_prompt_items
from pipeline_lib.models import load_tokenizer
from pipeline_lib.reporting.metrics import LM_EVAL
from pipeline_lib.sampling import make_sampler
from pipeline_lib.sampling.config import SamplerConfig
from pipeline_lib.store import digest_path
from pipeline_lib.suite.files import ITEMS_FILE
from tasks.sampling import SAMPLES_FILE
from tasks.stage import Input, InputMap, KeyedBy, Neutral, OptionalInput, stage

METRICS_FILE = "metrics.json"
ITEM_SCORES_FILE = "item_scores.json"  # each item's score (a rating, a preference), for paired intervals across rounds
JUDGE_FILE = "judge.json"  # who judged, with which prompt versions: logged as the run's params


def _who(judge: JudgeConfig, judge_model: str | None) -> dict[str, Any]:
    """The identity each judgment is keyed by: a served judge is named by its weights' content digest."""
    return judge_identity(judge, digest_path(judge_model) if judge_model else None)


def open_judge(config: JudgeConfig, judge_model: str | None, backend: str, sampler: SamplerConfig, dtype: str, seed: int) -> Judge:
    if config.base_url:
        return EndpointJudge(config)
    assert judge_model is not None
    return open_local_judge(config, Path(judge_model), sampler.model_copy(update={"backend": backend}), dtype, seed)


def _write_metrics(tmp: Path, metrics: dict[str, float], item_scores: dict[str, float | None]) -> None:
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (tmp / ITEM_SCORES_FILE).write_text(json.dumps(item_scores, indent=1, sort_keys=True))


def read_item_scores(folder: str | Path) -> dict[str, float | None]:
    return json.loads((Path(folder) / ITEM_SCORES_FILE).read_text())


def _write_judge(tmp: Path, judge: JudgeConfig, templates: dict[str, str]) -> None:
    (tmp / JUDGE_FILE).write_text(json.dumps({"judge": describe_judge(judge), "templates": templates}, indent=2, sort_keys=True))


def read_benchmark_metrics(folder: str | Path) -> dict[str, float]:
    return json.loads((Path(folder) / METRICS_FILE).read_text())


def read_judge(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / JUDGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- MT-Bench


@stage("mt-bench-answers", scratch="partial", tags=("accelerator",))
def mt_bench_answers(
    tmp: Path, scratch: Path, model: Input, questions: Input, limit: int | None, max_new_tokens: int, seed: int,
    backend: str, dtype: str, sampler: Neutral(SamplerConfig), batch_size: Neutral(int),
) -> dict:  # fmt: skip
    """Both turns of each MT-Bench question, at FastChat's temperature for its category."""
    chosen = mt_bench.take_questions(load_questions(questions), limit, questions)
    config = sampler.model_copy(update={"backend": backend})
    with make_sampler(config, Path(model), dtype=dtype, batch_size=batch_size) as live:
        stats = mt_bench.answer_questions(live, load_tokenizer(model), chosen, max_new_tokens, seed, tmp, scratch)
    return {"answers": stats}


@stage("mt-bench-judgments", scratch="partial", tags=("accelerator",))
def mt_bench_judgments(
    tmp: Path, scratch: Path, answers: Input, references: Input, judge_prompts: Input, judge: KeyedBy(JudgeConfig, judge_identity),
    judge_model: OptionalInput, rating_fallback: bool, backend: str, dtype: str, sampler: Neutral(SamplerConfig), seed: int,
) -> dict:  # fmt: skip
    """Single-answer grading of every turn, each judgment parsed to a 1-10 rating or counted as a failure
    (and, with ``rating_fallback``, asked for its likeliest rating)."""
    rows = mt_bench.read_answers(answers)
    refs = load_references(references)
    lacking = mt_bench.missing_references(rows, refs)
    if lacking:
        raise UserError(f"{references}: no two-turn reference answer for questions {lacking[:5]} (math, reasoning, coding need one)")
    prompts = load_judge_prompts(judge_prompts)
    pairs = mt_bench.grading_requests(prompts, rows, refs)
    requests, who = [r for _, r in pairs], _who(judge, judge_model)
    with closing(open_judge(judge, judge_model, backend, sampler, dtype, seed)) as live:
        records, counts = judge_all(live, who, requests, scratch)
        graded = mt_bench.graded_rows([row for row, _ in pairs], records)
        asked = mt_bench.fallback_requests(graded, requests) if rating_fallback else []
        if asked:
            first, _ = judge_all(live, who, [r for _, r in asked], scratch / "fallback")
            pending = mt_bench.apply_fallback(graded, asked, first)
            if pending:
                after_one, _ = judge_all(live, who, [r for _, r, _ in pending], scratch / "fallback-ten")
                mt_bench.apply_ten(graded, pending, after_one)
    mt_bench.write_graded(graded, tmp)
    metrics = mt_bench.mt_bench_metrics(graded)
    _write_metrics(tmp, metrics, {f"{r['question_id']}-turn{r['turn']}": r["rating"] for r in graded})
    _write_judge(tmp, judge, {row["template"]: prompts[row["template"]].version for row, _ in pairs})
    return {"judging": counts, "metrics": metrics}


# ---------------------------------------------------------------- pairwise


@stage("benchmark-prompts", tags=("data",))
def benchmark_prompts(tmp: Path, source: DataSource, files: InputMap, hub: dict[str, str], limit: int | None) -> dict:
    """A pairwise benchmark's prompt set as items the answer stage reads; ``files`` and ``hub`` name its content."""
    rows, report = pairwise.prompt_rows(source, limit)
    if not rows:
        raise UserError(f"pairwise prompts {source.source}: no usable prompt (skipped: {report['skipped']})")
    pq.write_table(pa.Table.from_pylist(rows), tmp / ITEMS_FILE)
    return {"rows": len(rows), "report": report, "skipped_rows": report["skipped"]}


@stage("baseline-outputs", tags=("data",))
def baseline_outputs(tmp: Path, items: Input, source: DataSource, files: InputMap, hub: dict[str, str]) -> dict:
    """A file of baseline outputs as samples of the prompt set (joined by prompt text)."""
    return pairwise.baseline_samples(source, read_prompt_items(items), tmp / SAMPLES_FILE)


@stage("pairwise-judgments", scratch="partial", tags=("accelerator",))
def pairwise_judgments(
    tmp: Path, scratch: Path, items: Input, answers: Input, baseline: Input, template: Input, orders: str, preference: str,
    prefix: str, judge: KeyedBy(JudgeConfig, judge_identity), judge_model: OptionalInput, backend: str, dtype: str,
    sampler: Neutral(SamplerConfig), seed: int,
) -> dict:  # fmt: skip
    """Each prompt's two outputs judged in the orders asked for; the win rate, LC win rate and position bias."""
    prompts = read_prompt_items(items)
    model, base = pairwise.texts(Path(answers) / SAMPLES_FILE), pairwise.texts(Path(baseline) / SAMPLES_FILE)
    alpaca = load_alpaca_template(template)
    pairs = pairwise.pairwise_requests(alpaca, prompts, model, base, orders, preference, seed)
    if not pairs:
        raise UserError("pairwise: no prompt has both a model answer and a baseline output")
    with closing(open_judge(judge, judge_model, backend, sampler, dtype, seed)) as live:
        records, counts = judge_all(live, _who(judge, judge_model), [r for _, r in pairs], scratch)
    judged = pairwise.judged_rows([row for row, _ in pairs], records)
    pairwise.write_judged(judged, tmp)
    metrics = pairwise.pairwise_metrics(judged, prefix)
    _write_metrics(tmp, metrics, pairwise.prompt_preferences(judged))
    _write_judge(tmp, judge, {"alpaca_eval": alpaca.version})
    return {"judging": counts, "metrics": metrics}


# ---------------------------------------------------------------- lm-eval


@stage("lm-eval", tags=("accelerator",))
def lm_eval_stage(
    tmp: Path, model: Input, items: OptionalInput, tasks: list[str], include_path: OptionalInput, limit: float | None,
    num_fewshot: int | None, max_new_tokens: int, backend: str, dtype: str, sampler: Neutral(SamplerConfig), seed: int,
    batch_size: Neutral(int),
) -> dict:  # fmt: skip
    """lm-eval's tasks on the round's model: in this process (HF), or against the vLLM server alignflow manages.
    ``items``: the suite's held-out split, exported as the ``alignflow_suite`` task."""
    folders = [include_path] if include_path else []
    if items:
        export_suite_task(Path(items), tmp / "suite-task", max_gen_toks=max_new_tokens)
        folders.append(str(tmp / "suite-task"))
    count = int(limit) if limit and limit >= 1 else limit
    common = dict(include_path=folders or None, limit=count, num_fewshot=num_fewshot, batch_size=batch_size, seed=seed)
    if backend == "vllm":
        with make_sampler(sampler.model_copy(update={"backend": backend}), Path(model), dtype=dtype) as live:
            # The server the sampler started (or reuses) for this model; lm-eval talks to it directly.
            results = run_lm_eval(model, tasks, tmp, backend="vllm", base_url=live.url, served_model_name=live.model_name, **common)
    else:
        results = run_lm_eval(model, tasks, tmp, backend="hf", dtype=dtype, **common)
    metrics = {f"{LM_EVAL}/{task}/{name}": value for task, values in results.items() for name, value in values.items()
               if "_stderr" not in name}  # fmt: skip
    _write_metrics(tmp, metrics, {})
    return {"tasks": sorted(results), "metrics": metrics}
