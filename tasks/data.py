"""Dataset preparation stages: the built-in suite, and the user's datasets by role."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline_lib import data as data_package
from pipeline_lib import suite as suite_package
from pipeline_lib import tracking
from pipeline_lib.tracking import lineage
from pipeline_lib.data import items as items_module
from pipeline_lib.data.config import DataConfig, DataSource
from pipeline_lib.data.items import read_prompt_items, take_items
from pipeline_lib.data.prepare import REPORT_FILE, ROWS_FILE, Budget, format_report, prepare_role, read_report
from pipeline_lib.models import load_tokenizer
from pipeline_lib.reporting.figures import histogram
from pipeline_lib.suite.config import SuiteConfig
from pipeline_lib.suite.files import write_suite_split
from tasks.stage import Input, InputMap, KeyedBy, stage


def _without_sizes(suite: SuiteConfig) -> dict:
    return suite.model_dump(exclude={"n_train", "n_eval"})


@stage("prepare-suite", code=(suite_package,), tags=("data",))
def prepare_suite(
    tmp: Path, suite: KeyedBy(SuiteConfig, _without_sizes), split: str, size: int, start: int = 0, stop: int | None = None
) -> dict:
    """One split of the built-in suite (``size`` items), or the slice ``start:stop`` of it (SEFT's reviser and pool
    prompts). The other split's size is not read, so changing it keeps this split."""
    sized = suite.model_copy(update={"n_eval" if split == "eval" else "n_train": size})
    return write_suite_split(sized, split, tmp, start, stop)


def _preparation(data: DataConfig) -> dict:
    # The roles' sources are keyed on their own; only how rows are filtered is read here.
    return data.model_dump(include={"dedupe", "decontaminate", "heldout"})


@stage("prepare-data", code=(data_package,), tags=("data",))
def prepare_data(
    tmp: Path,
    role: str,
    sources: list[DataSource],
    files: InputMap,
    hub: dict[str, str],
    settings: KeyedBy(DataConfig, _preparation),
    model: Input,
    budget: Budget,
    eval_sets: InputMap,
    seed: int,
) -> dict:
    """The user's ``data.<role>``: loaded, validated, rendered with ``model``'s chat template, filtered to fit
    ``budget``, deduplicated, decontaminated against ``eval_sets``' prompts and split. ``files`` and ``hub``
    name the sources' content."""
    tokenizer = load_tokenizer(model)
    eval_prompts = [item.prompt for folder in eval_sets.values() for item in read_prompt_items(folder)]
    report = prepare_role(role, sources, settings, tokenizer, budget, eval_prompts, seed, tmp)
    skipped = {reason: entry["count"] for reason, entry in report["skipped"].items()}
    return {"rows": report["kept"], "read": report["read"], "heldout": report["heldout"], "skipped_rows": skipped}


@stage("take-prompts", code=(items_module,), tags=("data",))
def take_prompts(tmp: Path, prepared: Input, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of a prepared role's prompts (SEFT's pool for one round)."""
    return take_items(Path(prepared), start, stop, tmp)


def log_prepared(parent_run_id: str, folder: str, role: str, sources: list[DataSource]) -> None:
    """The prepared role as an input of the run (its digest, source and role), with its report and token lengths."""
    # Several sources are named in the report; the prepared folder stands for them.
    source = sources[0].source if len(sources) == 1 else folder
    where = str(Path(source).resolve()) if Path(source).exists() else source
    lineage.log_dataset_input(parent_run_id, Path(folder) / ROWS_FILE, f"data-{role}", None, where, context=role)
    tracking.log_artifact(Path(folder) / REPORT_FILE, f"data/{role}", run_id=parent_run_id)
    lengths = pq.read_table(Path(folder) / ROWS_FILE)["total_tokens"].to_pylist()
    figure = histogram(lengths, f"data.{role}: tokens per row", "tokens")
    tracking.log_figure(figure, f"data/{role}/token_lengths.png", run_id=parent_run_id)
    print(format_report(read_report(Path(folder))), flush=True)

