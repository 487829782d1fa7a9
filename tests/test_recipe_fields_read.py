"""Every recipe setting is read by some stage of a method that accepts it (issue 19).

A ``data:`` section was once accepted by every method and read by none. This
module looks for any other setting in that state: it runs every method's real
flow on the tiny model, notes each read of a recipe setting while they run,
and asserts that every leaf of the recipe schema was read by a run of a
method whose recipes accept it (the registry's ``Method.sections``; the other
sections are common to every method).

What counts as a read
  * a field read as an attribute of a ``Section`` (``Section.__getattribute__``
    is wrapped for the test), or dumped with ``model_dump`` as a value to use
    (``make_sampler`` takes the vLLM server options that way);
  * by alignflow's own code (pipeline_lib, tasks, methods, flows): what Prefect,
    pydantic or the test itself reads is not alignflow using it.
  Reads are noted by place (``reviser.warmup.lora.r``, not just ``LoraConfig.r``):
  ``TrainConfig`` sits at ``train``, ``reviser.warmup`` and ``reviser.train``,
  and a setting read at one of them says nothing about the others.

What does not count (a setting that only reaches a hash is the bug to catch)
  * pydantic's own validation and dumping, ``to_jsonable_python`` and Prefect's
    parameter handling: they read ``__dict__``, never ``__getattribute__``
    (``test_serialising_and_hashing_make_no_attribute_reads``);
  * the recipe's validators (``Recipe._method_sections`` and the registry's
    ``check`` rules read many settings to reject a bad recipe, not to use them),
    ``config_hash``, ``Recipe.to_dict`` and ``save_resolved`` (hashing, MLflow
    params, config.yaml, a variant's copy);
  * computing a stage's key (``Stage.key_parts``, with the ``KeyedBy`` narrowing
    it calls): a setting passed to a stage counts only when the stage's body
    reads it, so one that a stage is given but ignores is caught;
  * code that walks the schema (it names ``model_fields``), which reads every
    setting alike.

A read is not an effect: a setting read and then overridden (LoRA's dropout
under an objective that turns dropout off) passes here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import typing
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel

from flows.cli import main
from pipeline_lib import config as config_module
from pipeline_lib.core.errors import UserError
from methods import METHODS as REGISTRY
from methods.recipe import Recipe, load_recipe
from pipeline_lib.core.section import Section
from pipeline_lib.data.config import DATA_ROLES
from pipeline_lib.sampling.config import SamplerConfig, VllmConfig
from pipeline_lib.training import launch
from tasks.stage import Stage

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PACKAGES = ("pipeline_lib", "tasks", "methods", "flows")
PROJECT = tuple(f"{REPO / package}{os.sep}" for package in PACKAGES)
METHODS = tuple(REGISTRY)
# Sections only some methods accept; every other top-level field is common to all methods.
OWNED = {section for method in REGISTRY.values() for section in method.sections}

# Settings the schema has but no code path can read, each refused by the recipe
# unless left at its default, so none is accepted and then ignored. The reviser
# trains on prompt/completion rows, with objective sft or ift only
# (ReviserConfig._trains_on_revisions), which read no preference or FIGA setting.
# The test fails once one of them is read (remove it then).
REFUSED_UNLESS_DEFAULT = {
    **{
        f"reviser.{phase}.{setting}": value
        for phase in ("warmup", "train")
        for setting, value in (("preference.beta", 0.5), ("preference.loss_type", "hinge"), ("figa.alpha", 2.0),
                               ("figa.beta", 1.0), ("figa.negative_band", [0.1, 0.5]))
    },
    # Moved to data.preference; kept as an always-null key so that existing recipes keep their hash.
    "reviser.preference": {"source": "prefs.jsonl"},
}  # fmt: skip

# One run per method, with the variants that reach mode-dependent settings, at
# the smallest sizes that still reach every stage. Each run has its own recipe
# name and MLflow experiment (see _run).
SMALL_SUITE = ["suite.n_train=8", "suite.n_eval=4"]
HH_RLHF = str(REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz")
# The user's data, every role read by a method that reads it, with every prepare-data setting set.
DATA_SETTINGS = ["data.dedupe=false", "data.decontaminate.ngram=8", "data.heldout=0.25", "train.max_length=512"]


def LAUNCHED(at: str) -> list[str]:  # noqa: N802 - reads as a constant in RUNS
    """Training at ``at`` in two processes on this machine, every multi-process setting given."""
    return [f"{at}.launcher=accelerate", f"{at}.distributed={{num_processes: 2, num_machines: 1, machine_rank: 0, "
            "main_process_ip: 127.0.0.1, main_process_port: null, strategy: ddp, config_file: null, join_timeout_s: 120}"]


TINY_REVISER = [*SMALL_SUITE, "reviser.n_prompts=4", "seft.pool_prompts=4",
                "reviser.warmup.epochs=1", "reviser.train.epochs=1"]  # fmt: skip
RUNS: list[tuple[str, str, str, list[str]]] = [
    # (label, method, recipe, overrides)
    # With judged benchmarks, so that eval.judge is read (its endpoint fields: _judge_endpoint_probe).
    ("evaluate", "evaluate", "evaluate-tiny.yaml", [
        "suite.n_eval=4", "eval.benchmarks=[{name: suite}, {name: mt_bench, limit: 1, max_new_tokens: 2}, {name: pairwise, limit: 2, max_new_tokens: 2}]",
        "eval.judge.model=tiny-llama", "eval.judge.max_new_tokens=2", "eval.judge.batch_size=2", "eval.judge.temperature=0",
    ]),  # fmt: skip
    # One round: the reviser (both phases, the preference set) and every round stage. The reviser's
    # phases train as the policy runs below do: LoRA, OnDARE, IFT with its linear schedule.
    ("seft", "seft", "seft-tiny.yaml",
     [*TINY_REVISER, *DATA_SETTINGS, f"data.prompts={{source: {HH_RLHF}, limit: 8}}",
      "seft.rounds=1", "reviser.model=tiny-llama", "reviser.temperature=0.5",
      "reviser.warmup.mode=lora", "reviser.warmup.objective=ift", "reviser.warmup.ift.lambda_schedule=linear",
      "reviser.train.objective=ift", "reviser.train.ift.lambda_schedule=linear", "reviser.train.optimizer=ondare",
      "reviser.train.merging.sft_model=tiny-llama", "reviser.train.merging.base_model=tiny-llama"]),
    # OnDARE reads train.merging.*; τ between the tiny model and itself is zero, which is fine here.
    ("sft-ondare", "sft", "sft-tiny.yaml",
     [*SMALL_SUITE, *DATA_SETTINGS, f"data.sft={{source: {HH_RLHF}, format: hh-rlhf, split: train, limit: 8}}",
      "train.optimizer=ondare", "train.merging.sft_model=tiny-llama", "train.merging.base_model=tiny-llama"]),
    # The linear schedule is what reads lambda_min and lambda_warmup_steps.
    ("ift-linear", "ift", "ift-tiny.yaml",
     [*SMALL_SUITE, "train.ift.lambda_schedule=linear", "eval.intervals={resamples: 200, confidence: 0.9}"]),
    ("dpo-lora", "dpo", "dpo-tiny.yaml",
     [*SMALL_SUITE, *DATA_SETTINGS, f"data.preference={{source: {HH_RLHF}, limit: 8}}", "train.mode=lora"]),
    # spin.last_beta is read (and applied) in the last iteration.
    ("spin", "spin", "spin-tiny.yaml", [*SMALL_SUITE, "spin.iterations=1", "spin.last_beta=0.2"]),
    ("figa", "figa", "figa-tiny.yaml",
     [*SMALL_SUITE, *DATA_SETTINGS, "figa.revised_from=data",
      f"data.revisions={{source: {REPO / 'tests' / 'data' / 'revisions-tiny.jsonl'}, columns: {{original: original}}}}"]),
    # Its own suite sizes: on fewer prompts the random tiny model may pass none, which stops the run.
    ("rft", "rft", "rft-tiny.yaml", []),
    # Learning, held-out play and the outcome-filtered SFT round (skipped, and reported, when no episode succeeds).
    ("cel", "cel", "cel-frozenlake-tiny.yaml", ["cel.learn_episodes=1", "cel.eval_episodes=1"]),
    # Its three contestants (SFT, SPIN, SEFT + OnDARE), the reviser's phases trained the other way round.
    # Its three contestants (SFT, SPIN, SEFT + OnDARE) in order, the reviser's phases trained the other way round
    # (orchestration would run them in other processes, whose reads no recorder sees: _orchestration_probe).
    ("compare", "compare", "compare-tiny.yaml",
     [*TINY_REVISER, "compare.token_budget=400", "reviser.train.mode=lora", "reviser.warmup.optimizer=ondare",
      "reviser.warmup.merging.sft_model=tiny-llama", "reviser.warmup.merging.base_model=tiny-llama"]),
]  # fmt: skip


# --- the schema --------------------------------------------------------------------------------


def _sections(annotation: object) -> list[type[Section]]:
    """The Section models an annotation holds directly (``X``, ``X | None``), not inside a list or dict."""
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    candidates = typing.get_args(annotation) if union else (annotation,)
    return [a for a in candidates if isinstance(a, type) and issubclass(a, Section)]


def leaves(model: type[Section] = Recipe, prefix: str = "") -> list[str]:
    """Every leaf setting of the recipe, as a dotted path.

    A nested section is walked; a dict- or list-valued field is a leaf, and a
    list of sections (``compare.methods``) has its items' fields as well
    (``compare.methods[].label``).
    """
    found = []
    for name, field in model.model_fields.items():
        nested = _sections(field.annotation)
        for section in nested:
            found += leaves(section, f"{prefix}{name}.")
        if nested:
            continue
        found.append(prefix + name)
        union = isinstance(field.annotation, types.UnionType) or typing.get_origin(field.annotation) is typing.Union
        for candidate in typing.get_args(field.annotation) if union else (field.annotation,):
            if typing.get_origin(candidate) is list:
                for item in _sections(typing.get_args(candidate)[0]):
                    found += leaves(item, f"{prefix}{name}[].")
    return found


def accepting_methods(path: str) -> set[str]:
    section = path.split(".")[0].removesuffix("[]")
    if section == "data":
        # A role is accepted by the methods that read it; how rows are prepared, by any method reading a role.
        role = path.split(".")[1].removesuffix("[]")
        return {name for name, method in REGISTRY.items() if (role in method.roles if role in DATA_ROLES else method.roles)}
    if section in OWNED:
        return {name for name, method in REGISTRY.items() if section in method.sections}
    return set(METHODS)


def _all_sections(cls: type[Section] = Section) -> Iterator[type[Section]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_sections(sub)


# --- the recorder ------------------------------------------------------------------------------


def _not_reading_codes() -> set[types.CodeType]:
    """Code that reads settings to validate, hash, log or copy a recipe, never to use them."""
    functions = [
        config_module.config_hash,
        config_module.hash_json,
        config_module.save_resolved,
        config_module._describe,
        config_module._suggestion,
        launch.Call.write,  # the launched workers' copy, as config.yaml is the run's
        Recipe.to_dict,
        Stage.key_parts,
        *(method.check for method in REGISTRY.values()),
        *(method.defaults for method in REGISTRY.values()),
    ]
    for cls in [Section, *_all_sections()]:
        decorators = cls.__pydantic_decorators__
        for group in (decorators.field_validators, decorators.model_validators, decorators.validators):
            functions += [getattr(d.func, "__func__", d.func) for d in group.values()]
    return {f.__code__ for f in functions}


class FieldReads:
    """Notes which recipe settings alignflow's code reads while a method runs, by their place in the recipe.

    A model's place (``reviser.warmup.``) comes from the recipe holding it: a
    ``Recipe``'s sections are placed when it is first read, and a copy
    (``model_copy``) takes its original's place. A read of a model with no
    place is kept, by class, in ``unplaced``, so that it cannot go unnoticed.
    """

    def __init__(self) -> None:
        self.by_method: dict[str, set[str]] = defaultdict(set)
        self.unplaced: dict[str, set[tuple[type, str]]] = defaultdict(set)
        self.method: str | None = None
        self._fields = {cls: frozenset(cls.model_fields) for cls in _all_sections()}
        self._places: dict[int, tuple[Section, str]] = {}  # id -> (the model, kept alive; its prefix)
        self._not_reading = _not_reading_codes()
        self._positions: dict[types.CodeType, list] = {}
        # The modules that define sections: their helpers (PromptsConfig.stop...) read for their caller.
        self._config_files = {sys.modules[cls.__module__].__file__ for cls in _all_sections()}
        self._hooks: set[types.CodeType] = set()

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> FieldReads:
        recorder = cls()
        fields = recorder._fields
        dump, copy = BaseModel.model_dump, BaseModel.model_copy

        def getattribute(self, name: str):
            value = object.__getattribute__(self, name)
            if name in fields.get(type(self), ()):
                recorder._read(self, name, sys._getframe(1))
            return value

        def model_dump(self, *args, **kwargs):
            dumped = dump(self, *args, **kwargs)
            if recorder.method is not None and recorder._is_use(sys._getframe(1)):
                recorder._dumped(self, dumped)
            return dumped

        def model_copy(self, *args, **kwargs):
            copied = copy(self, *args, **kwargs)
            prefix = recorder.prefix(self)
            if prefix is not None:
                recorder.place(copied, prefix)
            return copied

        # A property of a section (TrainConfig.launched) runs inside this hook: its reads are its caller's.
        recorder._hooks = {getattribute.__code__}
        # Process-wide (Prefect's worker threads included); monkeypatch deletes them again.
        monkeypatch.setattr(Section, "__getattribute__", getattribute)
        monkeypatch.setattr(Section, "model_dump", model_dump)
        monkeypatch.setattr(Section, "model_copy", model_copy)
        return recorder

    @contextmanager
    def recording(self, method: str) -> Iterator[None]:
        self.method = method
        try:
            yield
        finally:
            self.method = None

    def read(self, method: str) -> set[str]:
        return self.by_method[method]

    def place(self, model: Section, prefix: str) -> None:
        """Give ``model`` and the sections inside it their place, unless they have one."""
        if id(model) not in self._places:
            self._places[id(model)] = (model, prefix)
        for name, value in model.__dict__.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Section):
                    self.place(item, f"{prefix}{name}[]." if isinstance(value, list) else f"{prefix}{name}.")

    def prefix(self, model: Section) -> str | None:
        if id(model) not in self._places and isinstance(model, Recipe):
            self.place(model, "")
        return self._places.get(id(model), (None, None))[1]

    def _read(self, model: Section, name: str, frame: types.FrameType) -> None:
        prefix = self.prefix(model)  # places a recipe's sections on its first read, recording or not
        if self.method is None:
            return
        if prefix is None:
            if (type(model), name) not in self.unplaced[self.method] and self._is_use(frame):
                self.unplaced[self.method].add((type(model), name))
        elif prefix + name not in self.by_method[self.method] and self._is_use(frame):
            self.by_method[self.method].add(prefix + name)

    def _dumped(self, model: Section, dumped: object) -> None:
        """Everything in a dump taken to be used is read."""
        prefix = self.prefix(model)
        if not isinstance(dumped, dict):
            return
        for name in dumped.keys() & self._fields.get(type(model), frozenset()):
            if prefix is None:
                self.unplaced[self.method].add((type(model), name))
            else:
                self.by_method[self.method].add(prefix + name)
            value, nested = model.__dict__[name], dumped[name]
            pairs = zip(value, nested) if isinstance(value, list) and isinstance(nested, list) else [(value, nested)]
            for item, part in pairs:
                if isinstance(item, Section):
                    self._dumped(item, part)

    def _is_use(self, frame: types.FrameType | None) -> bool:
        # The recipe's own helpers (SeftConfig.pool_start, PromptsConfig.stop...) read for their caller.
        while frame is not None and (frame.f_code.co_filename in self._config_files or frame.f_code in self._hooks):
            if frame.f_code in self._not_reading:
                return False
            frame = frame.f_back
        if frame is None or not frame.f_code.co_filename.startswith(PROJECT):
            return False  # Prefect, pydantic, the test
        if "model_fields" in frame.f_code.co_names:
            return False  # code that walks the schema (a preflight check of every section) reads every field alike
        while frame is not None:
            code = frame.f_code
            if code in self._not_reading:
                return False
            frame = frame.f_back
        return True


# --- the runs ----------------------------------------------------------------------------------


@pytest.fixture
def own_stage_store(alignflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose stage store and run folders start empty (a stage another test finished would be
    reused, its body and the reads in it not run); the models and the MLflow store are the session's."""
    home = tmp_path / "home"
    home.mkdir()
    for shared in ("models", "mlflow"):
        (alignflow_home / shared).mkdir(exist_ok=True)
        (home / shared).symlink_to(alignflow_home / shared, target_is_directory=True)
    monkeypatch.setenv("ALIGNFLOW_HOME", str(home))
    return home


def _reviser_keeps_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reviser output reads as "Decision: none" (keep the sample as it is).

    A round with no accepted target stops the run, and a tiny reviser that
    writes the decision format takes ~50 optimizer steps (minutes here).
    No setting is read or left unread for what the reviser writes; the
    revise stage is otherwise real.
    """
    from pipeline_lib.revision import revise

    parse, keep = revise.parse_reviser_output, "Decision: none\nRevision:\n(unchanged)"
    monkeypatch.setattr(revise, "parse_reviser_output", lambda text, finish_reason=None: parse(keep, "stop"))


def _no_tag_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip Prefect's tag concurrency slots, which no test configures a limit for.

    Asking the API for them costs ~1.2 s per task run here, 3/4 of a tiny
    run's wall time. Should Prefect move the name, the runs are only slower.
    """
    from prefect import task_engine

    monkeypatch.setattr(task_engine, "_concurrency", lambda *args, **kwargs: contextlib.nullcontext(), raising=False)


def _run(label: str, recipe: str, overrides: list[str]) -> None:
    settings = [*overrides, f"name=fields-{label}", "tracking.experiment=alignflow-fields-test"]
    assert main(["run", str(CONFIGS / recipe), *settings]) == 0, f"run {label} failed"


def _vllm_sampler_probe(recorder: FieldReads, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sampler.vllm.*`` is read only when alignflow starts a vLLM server, which no test here can run.

    So the real ``make_sampler`` (what every sampling stage calls) is called
    with the vLLM backend chosen and the server start stubbed out: it reads
    the section, and the options it builds from it reach the sampler that
    would start the server.
    """
    from pipeline_lib import sampling
    from pipeline_lib.sampling import vllm_client

    received = {}

    def stub(model_path, options, **kwargs):
        received.update(options=options, **kwargs)
        return object()

    monkeypatch.setattr(sampling, "vllm_python", lambda: Path("/nonexistent/vllm/bin/python"))
    monkeypatch.setattr(vllm_client, "VLLMSampler", stub)
    vllm = VllmConfig(port=12345, startup_timeout_s=7, kv_cache_gib=0.5, max_model_len=256, enforce_eager=False,
                      extra_args=["--x"], keep_warm=3)  # fmt: skip
    config = SamplerConfig(backend="vllm", vllm=vllm)
    recorder.place(config, "sampler.")
    sampling.make_sampler(config, "unused-model-folder")
    options = received["options"]
    assert (options.port, options.startup_timeout_s, options.kv_cache_gib) == (12345, 7, 0.5)
    assert options.max_model_len == 256
    assert (options.enforce_eager, options.extra_args, received["keep_warm"]) == (False, ("--x",), 3)


def _judge_endpoint_probe(recorder: FieldReads, monkeypatch: pytest.MonkeyPatch) -> None:
    """``eval.judge``'s endpoint fields are read only with an OpenAI-compatible server (tests/test_judge_endpoint.py
    runs one); here the real judge client reads them and stops at the unset key variable, before any request."""
    from pipeline_lib.benchmarks.config import JudgeConfig
    from pipeline_lib.benchmarks.judge import EndpointJudge, judge_identity

    monkeypatch.delenv("ALIGNFLOW_PROBE_KEY", raising=False)
    config = JudgeConfig(base_url="http://127.0.0.1:9/v1", served_model_name="judge", api_key_env="ALIGNFLOW_PROBE_KEY")
    recorder.place(config, "eval.judge.")
    assert judge_identity(config)["served_model_name"] == "judge"
    with pytest.raises(UserError, match="ALIGNFLOW_PROBE_KEY is not set"):
        EndpointJudge(config)


def _launch_probe(recorder: FieldReads, monkeypatch: pytest.MonkeyPatch) -> None:
    """``launcher`` and ``distributed`` are read by the launcher of every training stage (``train`` and the
    reviser's phases) in the process that starts the workers. Launching them in these runs would cost two
    processes per training stage (tests/test_distributed_training.py launches one, end to end), so here
    the real launcher reads them and stops where it would start the processes; what the workers read of
    a training section, the in-process runs read."""
    from methods.recipe import load_recipe
    from pipeline_lib.training import launch

    def stopped(command, **kwargs):
        raise RuntimeError("stopped before it starts")

    monkeypatch.setattr(launch, "spawn_tied", stopped)
    at = ("train", "reviser.warmup", "reviser.train")
    recipe = load_recipe(CONFIGS / "seft-tiny.yaml", [setting for place in at for setting in LAUNCHED(place)])
    for place in at:
        config = recipe.train if place == "train" else getattr(recipe.reviser, place.split(".")[1])
        recorder.place(config, f"{place}.")
        call = launch.Call("model", "rows", "out", config, 0, "float32", str(Path(os.environ["ALIGNFLOW_HOME"]) / "probe"))
        call.launch_dir.mkdir(parents=True, exist_ok=True)
        with pytest.raises(RuntimeError, match="stopped before it starts"):
            launch.launch(call, config.launched)
        assert launch.launch_record(config) == {"launcher": "accelerate", "world_size": 2, "strategy": "ddp"}


def _orchestration_probe(recorder: FieldReads, monkeypatch: pytest.MonkeyPatch) -> None:
    """``orchestration`` runs contestants in other processes (tests/test_orchestration.py runs them), whose reads
    no recorder here sees. So the real runners are opened: the local pool (its size), and the Ray session, which
    reads a cluster's address and timeout and stops at an address that does not answer, and a local start's size,
    with ``ray.init`` stopped before it starts anything."""
    import ray

    from methods.orchestration import cluster, ray_session
    from pipeline_lib.core.orchestration import OrchestrationConfig

    pool = OrchestrationConfig(task_runner="local", max_workers=1)
    recorder.place(pool, "orchestration.")
    with cluster(pool) as found:
        assert found.kind == "local"

    remote = OrchestrationConfig(task_runner="ray", ray={"address": "127.0.0.1:9", "timeout_s": 0.2})
    local = OrchestrationConfig(task_runner="ray", ray={"num_cpus": 1})
    received = {}

    def stopped(**kwargs):
        received.update(kwargs)
        raise RuntimeError("stopped before it starts")

    monkeypatch.setattr(ray, "init", stopped)
    for config in (remote, local):
        recorder.place(config, "orchestration.")
        with pytest.raises((UserError, RuntimeError)):
            with ray_session(config.ray):
                pass
    assert received["num_cpus"] == 1


def unread_settings(recorder: FieldReads) -> list[str]:
    """Leaf settings that no run of a method accepting them read (the sampler probe counts for every method)."""
    return [
        path
        for path in leaves()
        if not any(path in recorder.read(method) for method in [*accepting_methods(path), "any"])
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_every_recipe_setting_is_read_by_a_method_that_accepts_it(monkeypatch, own_stage_store, capsys):
    recorder = FieldReads.install(monkeypatch)
    _reviser_keeps_every_sample(monkeypatch)
    _no_tag_slots(monkeypatch)
    for label, method, recipe, overrides in RUNS:
        with recorder.recording(method):
            _run(label, recipe, overrides)
        capsys.readouterr()
    # Every method samples through make_sampler, so what it reads counts for each of them.
    with recorder.recording("any"):
        _vllm_sampler_probe(recorder, monkeypatch)
        _judge_endpoint_probe(recorder, monkeypatch)
    with recorder.recording("compare"):
        _orchestration_probe(recorder, monkeypatch)
    with recorder.recording("seft"):
        _launch_probe(recorder, monkeypatch)

    assert {method for _, method, _, _ in RUNS} == set(METHODS), "one run per method"
    assert not any(recorder.unplaced.values()), f"reads of sections with no known place: {dict(recorder.unplaced)}"
    unread = set(unread_settings(recorder))
    stale = sorted(set(REFUSED_UNLESS_DEFAULT) - unread)
    assert not stale, f"read now, remove them from REFUSED_UNLESS_DEFAULT: {stale}"
    missing = sorted(unread - set(REFUSED_UNLESS_DEFAULT))
    assert not missing, f"settings that no run of a method accepting them reads: {missing}"


# --- the recorder's own assumptions -------------------------------------------------------------


def test_the_schema_walk_finds_nested_and_listed_settings():
    paths = leaves()
    assert {"reviser.warmup.lora.r", "data.preference[].source", "sampler.vllm.port", "cel.knobs"} <= set(paths)
    assert {"compare.methods", "compare.methods[].label", "seft.accept"} <= set(paths)
    assert "train" not in paths and "data.decontaminate" not in paths  # sections are walked, not leaves
    assert accepting_methods("data.revisions[].limit") == {"figa", "compare"}
    assert accepting_methods("data.heldout") == {name for name, method in REGISTRY.items() if method.roles}
    assert set(REFUSED_UNLESS_DEFAULT) <= set(paths)
    assert accepting_methods("reviser.train.lr") == {"seft", "figa", "compare"}
    assert accepting_methods("compare.methods[].label") == {"compare"}
    assert accepting_methods("train.lora.r") == set(METHODS)


def test_serialising_and_hashing_make_no_attribute_reads(monkeypatch):
    """Pydantic and Prefect take a model's values from ``__dict__``: hashing a setting is never a read of it."""
    from prefect.utilities.collections import visit_collection
    from pydantic_core import to_jsonable_python

    from pipeline_lib.config import config_hash
    from pipeline_lib.core.hashing import hash_json

    recipe = load_recipe(CONFIGS / "compare-tiny.yaml")
    train = recipe.train  # before the wrapper: the test's own reads are not the point here
    seen = []

    def getattribute(self, name):
        if name in type(self).model_fields:
            seen.append((type(self).__name__, name))
        return object.__getattribute__(self, name)

    monkeypatch.setattr(Section, "__getattribute__", getattribute)
    config_hash(recipe)
    hash_json(to_jsonable_python({"train": train, "recipe": recipe}))
    recipe.model_dump(mode="json")
    recipe.model_copy(update={"seed": 1})
    # What Prefect does with a task's parameters: the task gets the very object, not a copy.
    assert visit_collection({"recipe": recipe}, lambda value: value, return_data=True)["recipe"] is recipe
    assert seen == []


def test_validation_and_cache_key_reads_are_not_counted(monkeypatch):
    """A validator's reads and a stage key's reads are not uses; what a stage's body reads is."""
    from methods.compare.variants import variant_recipe
    from tasks.revision import reviser_data

    recorder = FieldReads.install(monkeypatch)
    compare = load_recipe(CONFIGS / "compare-tiny.yaml")
    sft = compare.compare.methods[0]
    with recorder.recording("check"):
        # Validating the variant reads prompts.start (Recipe._method_sections); only the validator does.
        variant = variant_recipe(compare, sft, {"base": "base-model"})
    with recorder.recording("key"):
        # Keying build-reviser-data dumps the reviser section (KeyedBy); only its body would read it.
        reviser_data.key_parts({"scores": None, "preference": None, "reviser": compare.reviser, "seed": 0})
    read = recorder.read("check")
    assert {"compare.token_budget", "compare.methods[].overrides"} <= read
    assert "prompts.start" not in read
    assert recorder.read("key") == set()
    assert not recorder.unplaced["check"]
    # A copy (SPIN's last iteration, the reviser's SFT) keeps its original's place.
    assert recorder.prefix(variant.train.model_copy(update={"lr": 1.0}).lora) == "train.lora."
    assert recorder.prefix(compare.reviser.warmup) == "reviser.warmup."


@pytest.mark.parametrize("path, value", sorted(REFUSED_UNLESS_DEFAULT.items()))
def test_settings_no_code_can_read_are_refused(path, value):
    moved = path == "reviser.preference"
    with pytest.raises(UserError, match="moved to data.preference" if moved else f"{'.'.join(path.split('.')[1:3])} is not used"):
        load_recipe(CONFIGS / "seft-tiny.yaml", [f"{path}={value}"])
