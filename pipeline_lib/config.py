"""Recipes: pydantic models, YAML loading, dotted command-line overrides, hashing.

A recipe is validated strictly (unknown keys are errors) because a typo in a
hyperparameter that is silently ignored costs a whole training run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline_lib.errors import UserError
from pipeline_lib.store import atomic_write_text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    ref: str = Field("smollm2-135m-instruct", description="alias, local HF folder or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class SuiteConfig(Section):
    """The built-in verifiable task suite (the default dataset)."""

    families: list[str] | None = None
    difficulty: list[int] = Field(default_factory=lambda: [1, 2])
    n_train: int = Field(256, ge=0)
    n_eval: int = Field(128, ge=1)
    seed: int = 0

    def for_split(self, split: str) -> dict[str, Any]:
        """The settings one split is generated from (not the other split's size)."""
        other = "n_train" if split == "eval" else "n_eval"
        return {"split": split, **self.model_dump(exclude={other})}

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str] | None) -> list[str] | None:
        from pipeline_lib.suite import FAMILIES

        unknown = sorted(set(families or []) - set(FAMILIES))
        if unknown or families == []:
            raise ValueError(f"unknown or no families {unknown}; choose from {list(FAMILIES)}")
        return families

    @field_validator("difficulty")
    @classmethod
    def _known_levels(cls, levels: list[int]) -> list[int]:
        from pipeline_lib.suite import DIFFICULTIES

        if not levels or any(level not in DIFFICULTIES for level in levels):
            raise ValueError(f"levels must be a non-empty subset of {list(DIFFICULTIES)}")
        return levels


class DataConfig(Section):
    """An external dataset; `source` is a hub id or a local file or folder."""

    source: str
    kind: Literal["prompt", "answer", "sft", "preference", "messages"] = "prompt"
    format: Literal["auto", "hh-rlhf", "mt-bench", "plain"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    split: str = "train"
    limit: int | None = Field(None, ge=1)


class VllmConfig(Section):
    """How alignflow starts a vLLM server (not used with ``sampler.base_url``)."""

    port: int | None = Field(None, ge=1, le=65535, description="loopback port; null: a free one")
    startup_timeout_s: float = Field(300.0, gt=0, description="how long to wait for the server to be healthy")
    kv_cache_gib: float = Field(2.0, gt=0, description="CPU KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    max_model_len: int | None = Field(4096, ge=16, description="context length the server allocates for")
    enforce_eager: bool = Field(True, description="skip graph compilation: ~25 s start instead of ~100 s on CPU")
    extra_args: list[str] = Field(default_factory=list, description="more `vllm serve` flags, passed as they are")
    keep_warm: int = Field(2, ge=0, description="servers kept running between stages of one run; 0: stop after each stage")


class SamplerConfig(Section):
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="auto: vLLM when its environment is installed (or base_url is set), else HF"
    )
    base_url: str | None = Field(None, description="a running vLLM server to use; alignflow leaves it alone")
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    n: int = Field(1, ge=1, description="samples per prompt")
    batch_size: int = Field(32, ge=1, description="HF: sequences per generate call; vLLM: requests in flight")
    seed: int = 0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url

    @model_validator(mode="after")
    def _base_url_is_vllm(self) -> SamplerConfig:
        if self.base_url and self.backend == "hf":
            raise ValueError("base_url points at a vLLM server; it cannot be used with backend 'hf'")
        return self


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class PreferenceConfig(Section):
    """DPO and SPIN (METHODS.md §2, §7)."""

    beta: float = Field(0.1, gt=0.0, description="β (SPIN's λ): strength of the pull towards the reference")
    loss_type: Literal["sigmoid", "hinge"] = Field("sigmoid", description="sigmoid: −log σ(u); hinge: relu(1 − u)")


class IftConfig(Section):
    """Intuitive Fine-Tuning (METHODS.md §3)."""

    lam: float = Field(0.2, ge=0.0, le=1.0, description="λ: share of the model's own guess in each input embedding")
    lambda_schedule: Literal["static", "linear"] = Field("static", description="linear: from lambda_min up to lam")
    lambda_min: float = Field(0.0, ge=0.0, le=1.0, description="λ at step 0 of the linear schedule")
    lambda_warmup_steps: int = Field(150, ge=1, description="optimizer steps the linear schedule takes to reach lam")
    lambda_noise_std: float = Field(0.0, ge=0.0, description="noisy λ: λ·(1 + std·N(0,1)) per step (paper: 0.5); 0: off")
    gamma: float = Field(0.95, ge=0.0, le=1.0, description="γ of the relation-propagation weights; 0: plain SFT weights")
    detach_weights: bool = Field(False, description="stop gradients through the weights (the reference code does not)")


class FigaConfig(Section):
    """FIGA's token weights (METHODS.md §4)."""

    alpha: float = Field(1.0, ge=0.0, description="weight of revised tokens the edit inserted or replaced, and its EOS")
    beta: float = Field(0.5, ge=0.0, description="−β on original tokens the edit deleted or replaced")
    negative_band: list[float] = Field(
        default_factory=lambda: [0.0, 0.6],
        description="a negative token counts only while its NLL lies in [low, high]; the reference code keeps NLL <= 0.6"
        " (0.6 <= NLL <= 1.0 before its commit of 2024-05-05: [0.6, 1.0])",
    )

    @field_validator("negative_band")
    @classmethod
    def _band(cls, band: list[float]) -> list[float]:
        if len(band) != 2 or not 0 <= band[0] <= band[1]:
            raise ValueError(f"give [low, high] with 0 <= low <= high, got {band}")
        return band


class MergingConfig(Section):
    """OnDARE / OnTIES (METHODS.md §5): merge each update with τ = θ_sft − θ_base."""

    sft_model: str | None = Field(None, description="the SFT model of τ (alias, folder or hub id)")
    base_model: str | None = Field(None, description="its pretrained base")
    reserve_p: float = Field(0.01, gt=0.0, le=1.0, description="p: share of τ and of each update kept")
    alpha: float = Field(1e-7, ge=0.0, lt=1.0, description="α: weight of τ in each step; 0: merging off")
    rescale: bool = Field(False, description="L1-rescale the sparsified update to its norm before dropping")
    merge_every: int = Field(1, ge=1, description="K: merge the accumulated update every K steps")
    clip: float = Field(1.0, gt=0.0, description="OnDARE: τ (and a rescaled update) clipped to [−clip, clip]")


# Objectives that train with every dropout off (pipeline_lib.training.trainers.dropout_off), so that the
# policy's log-probabilities are comparable with the reference's.
DROPOUT_OFF_OBJECTIVES = ("dpo", "spin", "ift")


class TrainConfig(Section):
    objective: Literal["sft", "dpo", "spin", "ift", "figa"] = "sft"
    sft_reduction: Literal["sequence", "token"] = Field(
        "sequence", description="SFT loss: mean NLL per sequence, then over the batch (METHODS.md §7); token: over all tokens"
    )
    optimizer: Literal["adamw", "ondare", "onties"] = "adamw"
    mode: Literal["full", "lora"] = "full"
    lr: float = Field(1e-5, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_tokens: int | None = Field(
        None, ge=1, description="training-token budget: replaces epochs by budget / tokens per epoch"
    )
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=8)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    ift: IftConfig = Field(default_factory=IftConfig)
    figa: FigaConfig = Field(default_factory=FigaConfig)
    merging: MergingConfig = Field(default_factory=MergingConfig)

    @model_validator(mode="after")
    def _merging_needs_full(self) -> TrainConfig:
        if self.optimizer != "adamw" and self.mode == "lora":
            raise ValueError(f"optimizer {self.optimizer!r} merges into the full weights; use mode 'full'")
        # By value, not by whether it was given: compare-methods hands each contestant a full copy.
        if self.objective in DROPOUT_OFF_OBJECTIVES and self.lora.dropout != LoraConfig().dropout:
            raise ValueError(
                f"lora.dropout is not used by objective {self.objective!r}, which trains with dropout off "
                "(as the official SPIN and IFT trainers and TRL's DPO do); remove it"
            )
        return self


class EvalConfig(Section):
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


Decision = Literal["none", "minor", "major"]


class ReviserConfig(Section):
    """SEFT's adaptive reviser: where its graded training data come from and how it is trained.

    Source (a) is the base policy's samples on ``n_prompts`` suite train
    prompts, scored by the verifiers; source (b), ``preference``, is any
    preference dataset (chosen/rejected pairs).
    """

    model: str | None = Field(None, description="model to train as the reviser; default: the policy's base model")
    n_prompts: int = Field(64, ge=0, description="suite train prompts whose policy samples make source (a)")
    samples_per_prompt: int = Field(4, ge=1)
    temperature: float | None = Field(
        None, ge=0.0, description="sampling temperature for source (a); null: sampler.temperature"
    )
    target: Literal["reference", "best"] = Field("reference", description="revision target for source (a)")
    preference: DataConfig | None = None
    tau_none: float = Field(0.0, ge=0.0, description="score gap up to which a response needs no change")
    tau_major: float = Field(0.5, ge=0.0, description="score gap above which a response needs a major revision")
    similar_ratio: float = Field(
        0.4, gt=0.0, le=1.0, description="unscored pairs: a rejected reply at least this similar to chosen is minor"
    )
    balance_ratio: float = Field(1.0, ge=0.0, description="cap each decision class at this times the smallest; 0: off")
    warmup: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1.0))
    warmup_rows: int | None = Field(None, ge=1, description="cap on warm-up examples, a seeded draw; null: all")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5, epochs=1.0))
    max_new_tokens: int = Field(128, ge=1, description="revision length limit; a longer revision counts as malformed")
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _trains_on_revisions(self) -> ReviserConfig:
        # The reviser's rows are prompt/completion pairs: only SFT and IFT can train on them,
        # so the preference and FIGA settings of its phases could never be used.
        for phase in ("warmup", "train"):
            train = getattr(self, phase)
            if train.objective not in ("sft", "ift"):
                raise ValueError(f"{phase}.objective must be 'sft' or 'ift' (the reviser learns from revisions), not {train.objective!r}")
            for section, default in (("preference", PreferenceConfig()), ("figa", FigaConfig())):
                if getattr(train, section) != default:
                    raise ValueError(f"{phase}.{section} is not used: the reviser trains with objective 'sft' or 'ift'")
        return self

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> ReviserConfig:
        if self.tau_none > self.tau_major:
            raise ValueError(f"tau_none ({self.tau_none}) must not exceed tau_major ({self.tau_major})")
        if self.n_prompts == 0 and self.preference is None:
            raise ValueError("the reviser needs data: set n_prompts > 0 or a preference dataset")
        return self


class SeftConfig(Section):
    rounds: int = Field(2, ge=1)
    pool_prompts: int = Field(64, ge=1, description="unannotated suite train prompts sampled per round")
    fresh_prompts: bool = Field(True, description="new pool prompts every round; false: the same pool each round")
    # Internal then external evolution: early rounds keep close to the
    # policy's own answers, later rounds accept heavier revisions.
    accept: list[list[Decision]] = Field(
        default_factory=lambda: [["none", "minor"], ["none", "minor", "major"]],
        description="decisions accepted as training targets, per round; the last entry repeats",
    )

    @field_validator("accept")
    @classmethod
    def _non_empty(cls, accept: list[list[str]]) -> list[list[str]]:
        if not accept or any(not decisions for decisions in accept):
            raise ValueError("give at least one round, each with at least one accepted decision")
        return accept

    def pool_start(self, round_index: int) -> int:
        """Where round ``round_index``'s prompts start, counted from the first pool prompt."""
        return (round_index - 1) * self.pool_prompts if self.fresh_prompts else 0

    def pool_end(self, round_index: int) -> int:
        return self.pool_start(round_index) + self.pool_prompts

    def accepted(self, round_index: int) -> list[str]:
        """The decisions round ``round_index`` (1-based) trains on."""
        return self.accept[min(round_index, len(self.accept)) - 1]


class TrackingConfig(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite under $ALIGNFLOW_HOME")
    experiment: str = "alignflow"


class PromptsConfig(Section):
    """The suite train items that sft, ift, dpo, spin and figa train on: items ``start`` to ``start + count``."""

    start: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1, description="null: every item from start to suite.n_train")

    def stop(self, n_train: int) -> int:
        return n_train if self.count is None else self.start + self.count


class SpinConfig(Section):
    iterations: int = Field(2, ge=1, description="K self-play iterations, each evaluated")
    last_beta: float | None = Field(
        None, gt=0.0, description="β of the last iteration (the paper: 5.0); null: train.preference.beta"
    )


class FigaSourceConfig(Section):
    revised_from: Literal["reviser", "reference"] = Field(
        "reviser", description="reviser: SEFT's reviser revises the policy's samples; reference: the suite's answers"
    )


# CEL (METHODS.md §6). The names match pipeline_lib.agent.ABLATIONS (a test
# keeps them equal); they are spelled out here so reading a recipe loads no agent code.
CelAblation = Literal["full", "frozen", "zero_shot", "no_rules", "no_playbook", "no_lookahead", "oracle_rules", "search"]


class CelSftConfig(Section):
    """The optional outcome-filtered SFT stage: train on the learning episodes that succeeded, then re-evaluate."""

    enabled: bool = False
    min_examples: int = Field(1, ge=1, description="fewer valid steps from successful episodes: skip training")


class CelConfig(Section):
    game: Literal["frozen_lake", "sokoban", "minesweeper"] = "frozen_lake"
    knobs: dict[str, Any] = Field(default_factory=dict, description="level-generator settings, e.g. size, boxes, mines")
    symbols: Literal["classic", "abstract"] = "classic"
    max_steps: int | None = Field(None, ge=1, description="step budget per episode; null: the game's default")
    ablation: CelAblation = "full"
    mode: Literal["single", "lookahead"] | None = Field(None, description="null: the ablation's (single, search: lookahead)")
    learn_episodes: int = Field(10, ge=0, description="episodes of play then reflection")
    eval_episodes: int = Field(10, ge=1, description="held-out layouts played with frozen knowledge")
    baseline: bool = Field(True, description="round 0: the held-out layouts with empty knowledge (zero-shot)")
    temperature: float = Field(0.7, ge=0.0, description="decisions while learning")
    eval_temperature: float = Field(0.0, ge=0.0, description="decisions on held-out layouts")
    max_new_tokens: int = Field(256, ge=8)
    reflection_max_new_tokens: int = Field(512, ge=16)
    history_steps: int = Field(4, ge=0, description="recent steps shown in each decision prompt")
    trajectory_char_budget: int = Field(6000, ge=500, description="reflection prompt: longer trajectories lose middle steps")
    answer_prefill: bool = Field(True, description="a response without an ACTION line is continued after 'ACTION:'")
    max_lookahead_actions: int = Field(8, ge=1)
    initial_rules: str = ""
    initial_playbook: str = ""
    sft: CelSftConfig = Field(default_factory=CelSftConfig)

    @model_validator(mode="after")
    def _playable(self) -> CelConfig:
        # Building one level names a bad knob now, not an hour into the run.
        from pipeline_lib.games import make_env

        try:
            make_env(self.game, symbols=self.symbols, max_steps=self.max_steps, **self.knobs).reset(0)
        except UserError as err:
            raise ValueError(str(err)) from None
        return self


class MethodVariant(Section):
    """One contestant of ``compare-methods``: a method and the overrides that make it this variant."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    method: Literal["seft", "sft", "ift", "dpo", "spin", "figa"]
    overrides: list[str] = Field(
        default_factory=list, description="a.b=value overrides; @base and @<label> name the start model or a variant's result"
    )


class CompareConfig(Section):
    methods: list[MethodVariant] = Field(min_length=1)
    token_budget: int | None = Field(
        None, ge=1, description="training tokens per method, split evenly over its rounds; null: each recipe's epochs"
    )

    @field_validator("methods")
    @classmethod
    def _unique_labels(cls, methods: list[MethodVariant]) -> list[MethodVariant]:
        labels = [m.label for m in methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        return methods


# Methods whose policy objective is the method itself.
OBJECTIVE_METHODS = ("sft", "ift", "dpo", "spin", "figa")
# Which recipe sections each method reads besides the common ones.
METHOD_SECTIONS = {
    "seft": ("reviser", "seft"),
    "spin": ("spin",),
    "figa": ("figa", "reviser"),
    "cel": ("cel",),
    # A comparison holds every method's settings and hands each variant its own.
    "compare": ("reviser", "seft", "spin", "figa", "compare"),
}


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    method: Literal["evaluate", "seft", "sft", "ift", "dpo", "spin", "figa", "compare", "cel"] = "evaluate"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    suite: SuiteConfig = Field(default_factory=SuiteConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    reviser: ReviserConfig | None = None
    seft: SeftConfig | None = None
    spin: SpinConfig | None = None
    figa: FigaSourceConfig | None = None
    compare: CompareConfig | None = None
    cel: CelConfig | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        if "data" in raw:
            # Accepted once and then ignored by every method; an error until datasets by role exist.
            raise ValueError(
                f"section 'data' is not read by method {raw.get('method', 'evaluate')!r} (no method reads it yet): "
                "remove it; SEFT's preference set is reviser.preference"
            )
        method = raw.get("method")
        if method == "seft":
            raw = {"reviser": {}, "seft": {}, **raw}
        if method == "spin":
            raw = {"spin": {}, **raw}
        if method == "cel":
            raw = {"cel": {}, **raw}
        if method == "figa":
            raw = {"figa": {}, **raw}
            if (raw["figa"] or {}).get("revised_from", "reviser") == "reviser":
                raw = {"reviser": {}, **raw}
        if method in OBJECTIVE_METHODS:
            train = dict(raw.get("train") or {})
            train.setdefault("objective", method)
            raw = {**raw, "train": train}
        return raw

    @model_validator(mode="after")
    def _method_sections(self) -> Recipe:
        """Another method's sections are a mistake, not something to ignore silently."""
        if self.method in OBJECTIVE_METHODS and self.train.objective != self.method:
            raise ValueError(
                f"method {self.method!r} trains with objective {self.method!r}, not train.objective {self.train.objective!r}"
            )
        if self.method == "seft" and self.train.objective not in ("sft", "ift"):
            raise ValueError(f"SEFT fine-tunes on revised targets with objective 'sft' or 'ift', not {self.train.objective!r}")
        allowed = METHOD_SECTIONS.get(self.method, ())
        for section in ("reviser", "seft", "spin", "figa", "compare", "cel"):
            if getattr(self, section) is not None and section not in allowed:
                users = [m for m, sections in METHOD_SECTIONS.items() if section in sections]
                owners = " or ".join(map(repr, users))
                raise ValueError(f"section '{section}' is only used by method {owners}, not {self.method!r}")
        if self.method == "compare" and self.compare is None:
            raise ValueError("method 'compare' needs a 'compare' section listing the methods")
        if self.method == "figa" and self.figa.revised_from == "reference" and self.reviser is not None:
            raise ValueError("section 'reviser' is only used by figa with figa.revised_from 'reviser'")
        if self.method == "seft":
            assert self.reviser is not None and self.seft is not None
            needed = self.reviser.n_prompts + self.seft.pool_end(self.seft.rounds)
            if self.suite.n_train < needed:
                what = "seft.pool_prompts × seft.rounds" if self.seft.fresh_prompts else "seft.pool_prompts"
                raise ValueError(f"suite.n_train ({self.suite.n_train}) must cover reviser.n_prompts + {what} ({needed})")
        stop = self.prompts.stop(self.suite.n_train)
        if self.method in OBJECTIVE_METHODS and stop > self.suite.n_train:
            raise ValueError(f"prompts.start + prompts.count ({stop}) exceeds suite.n_train ({self.suite.n_train})")
        if self.method in OBJECTIVE_METHODS and self.prompts.start >= self.suite.n_train:
            raise ValueError(f"prompts.start ({self.prompts.start}) must be below suite.n_train ({self.suite.n_train})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Settings that cannot change any output; leaving them out of the hash lets a
# user point a finished run at another MLflow server, or give vLLM more cache,
# without recomputing it.
OUTPUT_NEUTRAL = ("tracking", "sampler.vllm", "sampler.base_url")


def config_hash(recipe: Recipe) -> str:
    dumped = recipe.to_dict()
    for dotted in OUTPUT_NEUTRAL:
        *parents, name = dotted.split(".")
        node = dumped
        for part in parents:
            node = node.get(part, {})
        node.pop(name, None)
    return hash_json(dumped)


def hash_json(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply `a.b=value` overrides, validate. Errors name the key."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a recipe file (give a YAML file such as configs/seft.yaml)")
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(raw, item)
    return validate_recipe(raw, origin=str(path))


def validate_recipe(raw: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{origin}: " + "; ".join(_describe(e) for e in err.errors())) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the raw mapping; the value is parsed as YAML (so 3, 1e-5, true, [1,2])."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {item!r} must look like section.key=value")
    value = yaml.safe_load(text) if text.strip() else ""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {item!r}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "recipe"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'" + _suggestion(error["loc"])
    if error["type"] == "missing":
        return f"missing required key '{where}'"
    if error["type"] == "value_error":
        # Our own checks already word the problem; the whole input would only bury it.
        return f"bad value for '{where}': {error['msg'].removeprefix('Value error, ')}"
    return f"bad value for '{where}': {error['msg']} (got {error.get('input')!r})"


def _suggestion(loc: tuple[Any, ...]) -> str:
    """Name the valid keys of the section the typo sits in, best match first."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return ""
        model = nested[0]
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} (valid: {', '.join(valid)})"


def save_resolved(recipe: Recipe, folder: Path) -> str:
    """Write the resolved recipe and its hash next to a run's outputs; return the hash."""
    digest = config_hash(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    atomic_write_text(folder / "config.sha256", digest + "\n")
    return digest
