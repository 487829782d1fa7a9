"""lm-evaluation-harness as a library call, and the built-in suite exported as one of its tasks.

    task = export_suite_task(items_dir, tmp / "lm-eval-task")          # "alignflow_suite"
    metrics = run_lm_eval(model_dir, [task], out, include_path=str(tmp / "lm-eval-task"), limit=4)
    main_metric(metrics[task])                                          # ("exact_match", 0.25)

The same task runs on a model in this process (``backend="hf"``: lm-eval's
``hf`` model) or on an OpenAI-compatible server the caller started, such as
the project's vLLM server (``backend="vllm"``: lm-eval's ``local-completions``
model). Nothing here needs the network: the exported task reads a local JSONL
and the model is a local folder. (Built-in lm-eval tasks name hub datasets,
which only work offline when they are already in the datasets cache.)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pipeline_lib.core.errors import UserError
from pipeline_lib.data.items import read_prompt_items

SUITE_TASK = "alignflow_suite"
DATA_FILE = f"{SUITE_TASK}.jsonl"
TASK_FILE = f"{SUITE_TASK}.yaml"
RESULTS_FILE = "results.json"
# Answers in the suite are one line ("21", "4, 6, 7, 8", "erutnevda"): the first line is the answer, and
# a model that goes on to explain itself would otherwise never match. The ChatML end of turn (the tiny model's
# and SmolLM2's template) is listed because not every checkpoint names it as its EOS; lm-eval adds the EOS itself.
STOP_STRINGS = ("\n", "<|im_end|>")
DEFAULT_MAX_GEN_TOKS = 32
# The main metric of a task's results, first match wins (see ``main_metric``).
MAIN_METRICS = ("acc_norm", "acc", "exact_match", "f1", "em", "bleu", "rouge1", "word_perplexity", "perplexity")
# Bootstrap resamples behind the stderr of metrics without a closed form (bleu, rouge, ...); lm-eval's
# default of 100 000 takes minutes per metric on two cores, 1 000 gives the stderr to a few per cent.
BOOTSTRAP_ITERS = 1000


def export_suite_task(
    items_dir: Path, folder: Path, *, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, task_name: str = SUITE_TASK
) -> str:
    """Write the items of ``items_dir`` as ``folder/<task_name>.jsonl`` plus the lm-eval task reading it.

    The task (``folder/<task_name>.yaml``, ``alignflow_suite`` unless named; ``folder`` is the
    ``include_path`` for ``run_lm_eval``) is a zero-shot ``generate_until`` task: the prompt is the item's user turn, the target its
    reference answer, scored by lm-eval's ``exact_match``. Items whose reference is not *the* answer
    are left out: the suite's ``format`` family (any text meeting the constraints passes; the reference
    is one example), items without a reference, and multi-turn conversations (lm-eval's prompt is one
    user turn). Returns the task name.
    """
    if max_gen_toks < 1:
        raise UserError(f"max_gen_toks must be at least 1, not {max_gen_toks}")
    items_dir, folder = Path(items_dir).resolve(), Path(folder).resolve()
    checks = _suite_checks(items_dir)
    rows = [
        {"id": item.id, "family": item.family, "prompt": item.prompt, "reference": item.reference}
        for item in read_prompt_items(items_dir)
        if item.reference and len(item.messages) <= 1 and checks.get(item.id) != "format"
    ]
    if not rows:
        raise UserError(f"{items_dir}: no item has a single right answer to export for lm-eval (format items, "
                        "items without a reference and multi-turn items are left out)")
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{task_name}.jsonl"  # DATA_FILE and TASK_FILE for the default name
    data_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    (folder / f"{task_name}.yaml").write_text(_task_yaml(task_name, data_file, folder, max_gen_toks))
    return task_name


def _suite_checks(items_dir: Path) -> dict[str, str]:
    """Each suite item's verifier check ("number", "list", "text", "format"); none for the user's data."""
    from pipeline_lib.data.items import has_verifier
    from pipeline_lib.suite.files import read_items

    if not has_verifier(items_dir):
        return {}
    return {item.id: str(item.spec.get("check")) for item in read_items(items_dir)}


def _task_yaml(task_name: str, data_file: Path, folder: Path, max_gen_toks: int) -> str:
    import yaml

    config = {
        "task": task_name,
        "output_type": "generate_until",
        # The local JSONL, by absolute path: lm-eval finds it from any working directory, and the
        # datasets library reads it with its packaged `json` builder, which needs no hub.
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data_file)},
            # The Arrow copy the datasets library makes stays beside the task, not in ~/.cache.
            "cache_dir": str(folder / "datasets-cache"),
        },
        "test_split": "test",
        # Column names, not Jinja templates: lm-eval takes a column's value as it is, so a prompt
        # with braces in it is not mistaken for template syntax.
        "doc_to_text": "prompt",
        "doc_to_target": "reference",
        "generation_kwargs": {
            "until": list(STOP_STRINGS),
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_gen_toks,
        },
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                # Case is ignored: the suite's verifier ignores it for all but its "convert to uppercase"
                # items ("L" is the first letter of "ladder"). Punctuation is not: it carries answers here
                # (the minus in "-8", the dashes in "pepper-bridge-anchor", the commas between list items).
                "ignore_case": True,
                "ignore_punctuation": False,
                # Whitespace is ("4,6,7,8" lists the same numbers as "4, 6, 7, 8"), and so is one final
                # full stop ("21." answers 21); both are removed from the reference too.
                "regexes_to_ignore": [r"\s+", r"\.$"],
            }
        ],
        "metadata": {"version": 1.0},
    }
    header = "# Written by pipeline_lib.benchmarks.lm_eval_run.export_suite_task; regenerated on every export.\n"
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def run_lm_eval(
    model_path: str | Path,
    tasks: list[str],
    out_dir: Path,
    *,
    include_path: str | list[str] | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    backend: Literal["hf", "vllm"] = "hf",
    base_url: str | None = None,
    served_model_name: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    dtype: str = "float32",
) -> dict[str, dict[str, float]]:
    """Evaluate the model at ``model_path`` on lm-eval ``tasks``; write ``out_dir/results.json``, return the metrics.

    ``backend="hf"`` loads the model folder in this process (lm-eval's ``hf`` model, on CUDA when there
    is one); ``backend="vllm"`` sends the requests to the OpenAI-compatible server at ``base_url``
    (its root, ``.../v1`` or ``.../v1/completions``) serving the model as ``served_model_name``,
    through lm-eval's ``local-completions`` model. Either way prompts are tokenized here, with the
    model folder's tokenizer, so both backends feed the model the same token ids.

    Returns ``{task: {metric: value}}``, lm-eval's ``"exact_match,none"`` named ``exact_match`` and
    ``"exact_match,strict-match"`` named ``exact_match_strict-match`` (stderrs likewise, where lm-eval
    computed one). ``results.json`` is lm-eval's own results (less the per-sample records, which go to
    ``samples_<task>.jsonl`` beside it). ``dtype`` is the hf backend's; a server runs the dtype it was
    started with (the project's vLLM servers: float32, as here).
    """
    _quiet_lm_eval()
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    model_path = Path(model_path).resolve()
    if not (model_path / "config.json").is_file():
        raise UserError(f"lm-eval: {model_path} is not a model folder (no config.json)")
    if not tasks:
        raise UserError("lm-eval: no tasks given")
    if backend not in ("hf", "vllm"):
        raise UserError(f"lm-eval backend must be 'hf' or 'vllm', not {backend!r}")
    if backend == "hf":
        model, model_args = "hf", _hf_args(model_path, dtype)
    else:
        if not base_url:
            raise UserError("lm-eval backend 'vllm' needs base_url: the server's address, e.g. http://127.0.0.1:8000/v1")
        _require_api_packages()
        model, model_args = "local-completions", _completions_args(model_path, base_url, served_model_name, batch_size, seed)
    task_manager = _task_manager(list(tasks), include_path)
    chat = _has_chat_template(model_path)
    with _no_download_counts(), _own_random_state():
        results = lm_eval.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            # Prompts per request to the server: one (see _completions_args).
            batch_size=batch_size if backend == "hf" else 1,
            limit=limit,
            task_manager=task_manager,
            # The suite is evaluated in the project through the model's chat template (render_chat), and a
            # chat model asked a bare question tends to continue the question rather than answer it; so the
            # prompt goes through the template whenever the tokenizer has one, as lm-eval's
            # `apply_chat_template` does it (with the local tokenizer, for both backends). Few-shot examples,
            # if any, then become earlier turns of the conversation.
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
            log_samples=True,
            bootstrap_iters=BOOTSTRAP_ITERS,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", None) or {}
    for task, records in samples.items():
        with open(out_dir / f"samples_{task}.jsonl", "w") as f:
            for record in records:
                f.write(json.dumps(record, default=handle_non_serializable, ensure_ascii=False) + "\n")
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    return {task: task_metrics(values) for task, values in results["results"].items()}


def task_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """One task's lm-eval results (``{"exact_match,none": 0.5, "alias": ...}``) as ``{"exact_match": 0.5}``.

    The filter stays in the name unless it is ``none`` (``exact_match_strict-match``); entries that are
    not numbers (the alias, a stderr of "N/A") are left out.
    """
    metrics = {}
    for key, value in values.items():
        if "," not in key or isinstance(value, (str, bool)):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isnan(number):
            continue
        metric, _, filter_name = key.partition(",")
        metrics[metric if filter_name == "none" else f"{metric}_{filter_name}"] = number
    return metrics


def main_metric(task_results: Mapping[str, float]) -> tuple[str, float]:
    """The metric that stands for a task, as ``(name, value)``: the first of ``MAIN_METRICS`` it has.

    ``acc_norm`` comes first because lm-eval reports it beside ``acc`` for multiple-choice tasks
    whose answers differ in length (hellaswag, arc, ...), where length-normalised accuracy is the one
    leaderboards quote; then ``acc``; then ``exact_match`` for generative tasks (this project's
    suite, gsm8k, ...); then ``f1``, ``em``, ``bleu``, ``rouge1`` and the perplexities. A metric
    reported under several filters counts under its first one (lm-eval's order, ``none`` first when
    present). A task with none of these gives its first non-stderr metric.
    """
    names = [name for name in task_results if "_stderr" not in name]
    for wanted in MAIN_METRICS:
        # "acc_norm" before "acc" in MAIN_METRICS keeps "acc_norm_*" from being read as acc under a filter.
        matches = [name for name in names if name == wanted] or [name for name in names if name.startswith(f"{wanted}_")]
        if matches:
            return matches[0], task_results[matches[0]]
    if not names:
        raise UserError("lm-eval: the task reported no metrics")
    return names[0], task_results[names[0]]


@contextmanager
def _no_download_counts() -> Iterator[None]:
    """No "download count" ping to S3 from the datasets library while lm-eval loads the task's local JSONL.

    datasets sends one (a HEAD request, 3 s timeout, errors ignored) for every load, even of a packaged
    builder such as ``json`` reading a local file, unless the hub is offline; it is telemetry, and on a
    machine without network it costs a failed lookup. Hub datasets of lm-eval's own tasks still download.
    """
    import datasets.config

    before = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = before


@contextmanager
def _own_random_state() -> Iterator[None]:
    """simple_evaluate seeds Python's, NumPy's and torch's global generators; give the caller theirs back."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _quiet_lm_eval() -> None:
    """lm-eval logs every request batch and setting at INFO; keep its warnings and errors only."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)


def _task_manager(tasks: list[str], include_path: str | list[str] | None) -> Any:
    """lm-eval's TaskManager knowing ``tasks``; an unknown name is a one-line ``UserError``.

    Indexing lm-eval's own ~15 000 task configs takes seconds, so the include path alone is tried first.
    """
    from lm_eval.tasks import TaskManager

    for folder in [include_path] if isinstance(include_path, str) else include_path or []:
        if not Path(folder).is_dir():
            raise UserError(f"lm-eval include_path {folder} is not a folder")
    if include_path is not None:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if not _unknown(local, tasks):
            return local
    manager = TaskManager(include_path=include_path)
    unknown = _unknown(manager, tasks)
    if unknown:
        where = f"include_path {include_path}" if include_path else "no include_path given"
        raise UserError(f"lm-eval: unknown task(s) {', '.join(map(repr, unknown))}: not among lm-eval's own tasks ({where})")
    return manager


def _unknown(manager: Any, tasks: list[str]) -> list[str]:
    known = set(manager.all_tasks)
    return [task for task in tasks if task not in known and not (task.endswith(".yaml") and Path(task).is_file())]


def _require_api_packages() -> None:
    """lm-eval's API models need its ``api`` extra; say which package is missing, in one line."""
    from importlib.util import find_spec

    missing = [name for name in ("aiohttp", "requests", "tenacity", "tqdm") if find_spec(name) is None]
    if missing:
        raise UserError(f"lm-eval backend 'vllm' needs the package(s) {', '.join(missing)} (lm-eval's 'api' extra); "
                        "install them in this environment")


def _has_chat_template(model_path: Path) -> bool:
    from transformers import AutoTokenizer

    return bool(getattr(AutoTokenizer.from_pretrained(str(model_path)), "chat_template", None))


def _hf_args(model_path: Path, dtype: str) -> dict[str, Any]:
    import torch

    return {
        "pretrained": str(model_path),
        "dtype": dtype,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _completions_args(
    model_path: Path, base_url: str, served_model_name: str | None, batch_size: int, seed: int
) -> dict[str, Any]:
    from pipeline_lib.sampling.vllm_server import SERVED_NAME

    return {
        "model": served_model_name or SERVED_NAME,
        "base_url": completions_url(base_url),
        # The model folder's tokenizer, not the server's: lm-eval renders the chat template and tokenizes
        # here, and sends token ids (tokenized_requests), so the server sees exactly what the hf backend
        # feeds its model; loglikelihood tasks need the ids anyway to find where the continuation starts.
        "tokenizer": str(model_path),
        "tokenizer_backend": "huggingface",
        "tokenized_requests": True,
        # `batch_size` requests in flight, one prompt each (simple_evaluate's batch_size=1): the server
        # batches them as they come.
        "num_concurrent": max(1, batch_size),
        "seed": seed,
        "max_retries": 3,
    }


def completions_url(base_url: str) -> str:
    """The completions endpoint under a server's root, ``/v1`` or the endpoint itself."""
    url = base_url.rstrip("/")
    if url.endswith("/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/completions"
