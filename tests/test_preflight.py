"""A recipe's data sources are checked before its flow starts, not when the stage that reads them runs."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from flows.cli import main
from methods.preflight import check_data_sources, data_sources
from methods.recipe import load_recipe
from pipeline_lib.config import config_hash
from pipeline_lib.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SEFT = str(REPO / "configs" / "seft-tiny.yaml")
COMPARE = str(REPO / "configs" / "compare-tiny.yaml")
KEY = "data.preference.source"


@pytest.fixture
def local_file(tmp_path) -> Path:
    # Never read by the checks; it only has to exist.
    path = tmp_path / "prefs.jsonl"
    path.write_text("{}\n")
    return path


def check(recipe_path: str, *overrides: str) -> None:
    check_data_sources(load_recipe(recipe_path, list(overrides)))


def test_a_missing_source_stops_the_run_before_any_stage(capsys, alignflow_home):
    overrides = [f"{KEY}=/nonexistent.jsonl.gz"]
    recipe = load_recipe(SEFT, overrides)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"

    assert main(["run", SEFT, *overrides]) == 2
    err = capsys.readouterr().err
    assert err == f"alignflow: error: {KEY}: /nonexistent.jsonl.gz does not exist\n"
    assert not run_dir.exists()


def test_existing_files_and_folders_pass_unread(local_file):
    check(SEFT, f"{KEY}={local_file}")
    check(SEFT, f"{KEY}={local_file.parent}")


def test_a_relative_path_is_named_resolved(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    # One slash, as in a hub id; the data suffix makes it a path.
    with pytest.raises(UserError, match=f"^{KEY}: {tmp_path / 'data' / 'prefs.jsonl'} does not exist$"):
        check(SEFT, f"{KEY}=data/prefs.jsonl")


def test_an_uncached_hub_dataset_fails_offline_with_a_way_out(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as error:
        check(SEFT, f"{KEY}=nobody/no-such-prefs")
    message = str(error.value)
    assert message.startswith(f"{KEY}: hub dataset 'nobody/no-such-prefs'")
    assert "offline" in message and "local file" in message and "\n" not in message


def test_a_hub_dataset_passes_online_where_only_a_download_could_tell(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    check(SEFT, f"{KEY}=nobody/no-such-prefs")


def test_a_comparison_checks_its_own_and_its_contestants_sources(local_file):
    assert (KEY, str(local_file)) in data_sources(load_recipe(COMPARE, [f"{KEY}={local_file}"]))
    with pytest.raises(UserError, match=f"^{KEY}: /missing.jsonl does not exist$"):
        check(COMPARE, f"{KEY}=/missing.jsonl")
    contestant = f"[{{label: mine, method: seft, overrides: ['{KEY}=/missing.jsonl']}}]"
    with pytest.raises(UserError, match=rf"^compare.methods\[mine\]: {KEY}: /missing.jsonl does not exist$"):
        check(COMPARE, f"{KEY}={local_file}", f"compare.methods={contestant}")


def test_contestants_naming_other_contestants_results_are_checked_before_those_exist(local_file):
    # compare-tiny's seft-ondare takes τ from @sft and @base, models that exist only once the comparison runs.
    keys = [key for key, _ in data_sources(load_recipe(COMPARE, [f"{KEY}={local_file}"]))]
    assert f"compare.methods[seft-ondare]: {KEY}" in keys
