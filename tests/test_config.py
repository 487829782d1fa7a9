import pytest
import yaml

from methods.recipe import load_recipe, validate_recipe

from pipeline_lib.config import apply_override, config_hash, save_resolved
from pipeline_lib.core.errors import UserError


@pytest.fixture()
def recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "demo",
                "model": {"ref": "tiny-llama"},
                "train": {"lr": 2e-5, "mode": "lora"},
                "sampler": {"backend": "hf", "n": 2},
            }
        )
    )
    return path


def test_yaml_and_overrides_are_typed(recipe_file):
    recipe = load_recipe(recipe_file, ["train.lr=1e-5", "sampler.backend=hf", "suite.difficulty=[1,3]", "train.lora.r=8"])
    assert recipe.train.lr == pytest.approx(1e-5)
    assert recipe.train.lora.r == 8
    assert recipe.suite.difficulty == [1, 3]
    assert recipe.sampler.n == 2 and recipe.model.ref == "tiny-llama"


def test_unknown_key_is_named_with_a_suggestion(recipe_file):
    with pytest.raises(UserError) as err:
        load_recipe(recipe_file, ["train.lrr=1e-5"])
    message = str(err.value)
    assert "unknown key 'train.lrr'" in message
    assert "did you mean 'lr'" in message
    assert "\n" not in message


def test_unknown_top_level_section(recipe_file):
    with pytest.raises(UserError, match="unknown key 'trian'"):
        load_recipe(recipe_file, ["trian.lr=1"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=-1", "train.lr"),
        ("sampler.backend=tpu", "sampler.backend"),
        ("sampler.top_p=1.5", "sampler.top_p"),
        ("train.batch_size=many", "train.batch_size"),
        ("suite.families=[arithmetic,astrology]", "suite.families"),
        ("suite.difficulty=[4]", "suite.difficulty"),
        ("sampler.backend=sglang", "sampler.backend"),
            ("sampler.base_url=localhost:8000", "sampler.base_url"),
            ("sampler.vllm.port=0", "sampler.vllm.port"),
        ("name=has space", "name"),
    ],
)
def test_bad_values_name_the_key(recipe_file, override, key):
    with pytest.raises(UserError) as err:
        load_recipe(recipe_file, [override])
    assert f"'{key}'" in str(err.value)


def test_malformed_override_and_value_section_clash():
    with pytest.raises(UserError, match="section.key=value"):
        apply_override({}, "train.lr")
    with pytest.raises(UserError, match="'seed' is a value"):
        apply_override({"seed": 1}, "seed.x=2")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(UserError, match="missing required key 'name'"):
        validate_recipe({})


def test_hash_tracks_outputs_not_tracking(recipe_file):
    base = load_recipe(recipe_file)
    assert config_hash(base) == config_hash(load_recipe(recipe_file))
    assert config_hash(base) != config_hash(load_recipe(recipe_file, ["train.lr=3e-5"]))
    # Where metrics go cannot change what is computed.
    assert config_hash(base) == config_hash(load_recipe(recipe_file, ["tracking.experiment=other"]))
    # Nor can how a vLLM server is started, or which running one is used.
    for neutral in ("sampler.vllm.kv_cache_gib=4", "sampler.vllm.keep_warm=0"):
        assert config_hash(base) == config_hash(load_recipe(recipe_file, [neutral])), neutral
    auto = load_recipe(recipe_file, ["sampler.backend=auto"])
    served = load_recipe(recipe_file, ["sampler.backend=auto", "sampler.base_url=http://127.0.0.1:8000"])
    assert config_hash(auto) == config_hash(served)
    assert config_hash(base) != config_hash(load_recipe(recipe_file, ["sampler.backend=vllm"]))
    assert base.suite.for_split("eval") == load_recipe(recipe_file, ["suite.n_train=9"]).suite.for_split("eval")
    assert base.suite.for_split("train") != load_recipe(recipe_file, ["suite.n_train=9"]).suite.for_split("train")


def test_resolved_config_is_saved_and_reloads(recipe_file, tmp_path):
    recipe = load_recipe(recipe_file, ["train.lr=1e-5"])
    digest = save_resolved(recipe, tmp_path / "run")
    assert (tmp_path / "run" / "config.sha256").read_text().strip() == digest
    again = load_recipe(tmp_path / "run" / "config.yaml")
    assert again == recipe and config_hash(again) == digest


def test_a_data_role_the_method_does_not_read_is_an_error_that_names_it(recipe_file):
    with pytest.raises(UserError, match=r"data.prompts is not read by method 'evaluate' \(it reads no data role\)"):
        load_recipe(recipe_file, ["data.prompts.source=/nonexistent.jsonl"])
    with pytest.raises(UserError, match=r"data is now a set of datasets by role"):
        load_recipe(recipe_file, ["data.source=/nonexistent.jsonl"])


@pytest.mark.parametrize("objective", ["dpo", "spin", "ift"])
def test_lora_dropout_is_refused_where_training_turns_dropout_off(recipe_file, objective):
    with pytest.raises(UserError, match=f"lora.dropout is not used by objective '{objective}'"):
        load_recipe(recipe_file, [f"method={objective}", "train.mode=lora", "train.lora.dropout=0.1"])
    assert load_recipe(recipe_file, [f"method={objective}", "train.mode=lora"]).train.lora.dropout == 0.05
    assert load_recipe(recipe_file, ["method=sft", "train.mode=lora", "train.lora.dropout=0.1"]).train.lora.dropout == 0.1


@pytest.mark.parametrize(
    "override, message",
    [
        ("reviser.train.objective=dpo", "train.objective must be 'sft' or 'ift'"),
        ("reviser.warmup.preference.beta=0.5", "warmup.preference is not used"),
        ("reviser.train.figa.alpha=2", "train.figa is not used"),
    ],
)
def test_reviser_settings_no_reviser_training_reads_are_refused(recipe_file, override, message):
    with pytest.raises(UserError, match=message):
        load_recipe(recipe_file, ["method=seft", "suite.n_train=400", override])
    assert load_recipe(recipe_file, ["method=seft", "suite.n_train=400", "reviser.train.objective=ift"])
