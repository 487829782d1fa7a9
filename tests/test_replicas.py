"""Generation on several vLLM replicas (``sampler.replicas``, ``sampler.base_urls``): shards dealt to whichever
replica is free, a lost replica's shard moved to another, the same greedy rows whatever the count.

The server tests share one pair of tiny-model replicas (one CPU core each) and
are marked like tests/test_vllm.py's; the config checks and the lost-replica
bookkeeping with stand-in servers need no vLLM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from pipeline_lib.benchmarks import judging
from pipeline_lib.benchmarks.config import JudgeConfig
from pipeline_lib.benchmarks.judge import LocalJudge
from pipeline_lib.core.errors import UserError
from pipeline_lib.models import load_tokenizer
from pipeline_lib.sampling import SamplingParams, make_sampler, render_chat, sample_to_parquet
from pipeline_lib.sampling.config import SamplerConfig, VllmConfig
from pipeline_lib.sampling.environment import vllm_python
from pipeline_lib.sampling.replicas import AllReplicasDown, ReplicaSet
from pipeline_lib.sampling.vllm_server import replica_devices
from processes import command_line

VLLM_MARKS = [
    pytest.mark.skipif(
        vllm_python() is None, reason="no vLLM environment (.venv-vllm or ALIGNFLOW_VLLM_PYTHON): run `make setup-vllm`"
    ),
    pytest.mark.integration,
    # Their own xdist worker: the pair of one-core servers is shared by the module, and the "vllm" group
    # already holds about 13 minutes of work.
    pytest.mark.xdist_group("vllm-replicas"),
]
REPO = Path(__file__).resolve().parents[1]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24)
SHARD_SIZE = 2  # 22 prompts: 11 shards, so both replicas get several


def on_vllm(test):
    for mark in VLLM_MARKS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def prompts(tiny_model: Path) -> tuple[list[str], list[str]]:
    tokenizer = load_tokenizer(tiny_model)
    questions = [f"Question {i}: what is {i} plus {3 * i}, and why?" for i in range(20)] + ["hi", "Write a haiku."]
    return [f"q{i}" for i in range(len(questions))], [render_chat(tokenizer, q) for q in questions]


def _config(**settings) -> SamplerConfig:
    # Small caches and no warm servers: this machine is shared, and closing the set must stop its servers.
    return SamplerConfig(backend="vllm", batch_size=8, vllm=VllmConfig(kv_cache_gib=1, keep_warm=0), **settings)


@pytest.fixture(scope="module")
def pair(tiny_model: Path):
    """Two replicas alignflow starts, one CPU core each (about the cost of one start: they start side by side).

    The tests below use them in file order: the fifth kills one, the sixth closes the set.
    """
    if vllm_python() is None:
        pytest.skip("no vLLM environment")
    sampler = make_sampler(_config(replicas=2), tiny_model)
    assert isinstance(sampler, ReplicaSet)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def one_replica_rows(pair: ReplicaSet, prompts, tmp_path_factory) -> list[dict]:
    """The rows of one replica alone, through the one-server path (no replica set)."""
    ids, texts = prompts
    out = tmp_path_factory.mktemp("one") / "samples.parquet"
    stats = sample_to_parquet(pair.members[0], ids, texts, GREEDY, out, out.parent / "shards", SHARD_SIZE)
    assert "replicas" not in stats, "one sampler: the stats are as they always were"
    return pq.read_table(out).to_pylist()


def _pid(sampler) -> int:
    return sampler.server.process.pid


def _shard_meta(shard_dir: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(shard_dir.glob("shard-*.json"))]


@on_vllm
def test_two_replicas_give_one_replicas_rows_and_share_the_shards(pair, prompts, one_replica_rows, tmp_path):
    ids, texts = prompts
    # Each replica on its own core, started by alignflow.
    assert [m.server.options.devices for m in pair.members] == replica_devices(2)
    out = tmp_path / "samples.parquet"
    stats = sample_to_parquet(pair, ids, texts, GREEDY, out, tmp_path / "shards", SHARD_SIZE)
    assert pq.read_table(out).to_pylist() == one_replica_rows
    assert stats["replicas"] == 2 and stats["replica_failures"] == []
    assert set(stats["shards_per_replica"]) == {m.url for m in pair.members}
    assert all(n > 0 for n in stats["shards_per_replica"].values()), stats["shards_per_replica"]
    assert sum(stats["shards_per_replica"].values()) == stats["shards_total"] == 11
    # A shard says what it was made from, not where: the one-replica run's shards are the same files' worth.
    assert all("replica" not in json.dumps(meta) for meta in _shard_meta(tmp_path / "shards"))
    # Finished shards are reused whatever the number of replicas: one replica alone reuses all of them.
    again = sample_to_parquet(pair.members[1], ids, texts, GREEDY, out, tmp_path / "shards", SHARD_SIZE)
    assert again["shards_reused"] == 11 and pq.read_table(out).to_pylist() == one_replica_rows


@on_vllm
def test_a_served_judge_spreads_its_shards_over_the_replicas(pair, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(judging, "SHARD_SIZE", 3)
    config = JudgeConfig(model="tiny-llama", max_new_tokens=6)
    # Generated judgments only: a server's first constrained choice costs it ~25 s of warm-up on CPU,
    # and the shards are dealt the same whatever they ask.
    asks = [[{"role": "user", "content": f"Rate answer {i}: is {i} even?"}] for i in range(12)]
    requests = [judging.JudgeRequest(messages=m, version="1", mode="generate") for m in asks]
    tokenizer = load_tokenizer(tiny_model)
    alone, _ = judging.judge_all(LocalJudge(pair.members[0], tokenizer, config), {"j": 1}, requests, tmp_path / "alone")
    records, counts = judging.judge_all(LocalJudge(pair, tokenizer, config), {"j": 1}, requests, tmp_path / "pair")
    assert records == alone
    assert counts["judged"] == 12 and counts["replicas"] == 2
    assert all(n > 0 for n in counts["shards_per_replica"].values()), counts


@on_vllm
def test_base_urls_share_running_servers_and_leave_them_running(pair, tiny_model, prompts, one_replica_rows, tmp_path):
    ids, texts = prompts
    urls = [m.url + "/v1" for m in pair.members]
    with make_sampler(SamplerConfig(base_urls=urls, batch_size=8), tiny_model) as external:
        assert isinstance(external, ReplicaSet) and all(m.server is None for m in external.members)
        stats = sample_to_parquet(external, ids, texts, GREEDY, tmp_path / "s.parquet", tmp_path / "shards", SHARD_SIZE)
    assert pq.read_table(tmp_path / "s.parquet").to_pylist() == one_replica_rows
    assert all(n > 0 for n in stats["shards_per_replica"].values())
    assert all(m.server.is_alive() for m in pair.members), "servers alignflow did not start are never stopped by it"
    # The one-element list is the single base_url: one plain sampler.
    with make_sampler(SamplerConfig(base_urls=urls[:1]), tiny_model) as single:
        assert not isinstance(single, ReplicaSet) and single.url == pair.members[0].url


@on_vllm
def test_sampled_rows_do_not_depend_on_the_replica_or_the_batch(pair, prompts, tmp_path):
    ids, texts = prompts
    sampled = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, n=2, seed=5)

    def rows(sampler, name, params=sampled) -> list[dict]:
        out = tmp_path / name / "samples.parquet"
        sample_to_parquet(sampler, ids, texts, params, out, out.parent / "shards", SHARD_SIZE)
        return pq.read_table(out).to_pylist()

    one_server = rows(pair.members[0], "one")
    # Two replicas draw each request in another batch, on another core and in another order.
    assert rows(pair, "two") == one_server
    texts_of = [r["text"] for r in one_server]
    assert sum(a != b for a, b in zip(texts_of[::2], texts_of[1::2])) >= len(ids) - 1, "a prompt's two samples differ"
    other_seed = rows(pair, "seed-6", dataclasses.replace(sampled, seed=6))
    assert sum(a["text"] != b["text"] for a, b in zip(other_seed, one_server)) >= len(one_server) - 2
    # A nucleus of (almost) nothing keeps only the likeliest token: the greedy answer.
    greedy = rows(pair, "greedy", GREEDY)
    narrow = rows(pair, "narrow", dataclasses.replace(GREEDY, temperature=1.0, top_p=1e-6, n=1))
    assert [r["text"] for r in narrow] == [r["text"] for r in greedy]


@on_vllm
def test_a_replica_killed_mid_stage_has_its_shard_moved(pair, prompts, one_replica_rows, tmp_path, capfd):
    ids, texts = prompts
    victim = pair.members[1]
    shards = tmp_path / "shards"

    def kill_after_the_first_shard() -> None:
        deadline = time.monotonic() + 120
        while not list(shards.glob("shard-*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(_pid(victim), signal.SIGKILL)  # a server this test started, by its PID

    killer = threading.Thread(target=kill_after_the_first_shard)
    killer.start()
    stats = sample_to_parquet(pair, ids, texts, GREEDY, tmp_path / "s.parquet", shards, SHARD_SIZE)
    killer.join()
    assert pq.read_table(tmp_path / "s.parquet").to_pylist() == one_replica_rows
    assert [f["replica"] for f in stats["replica_failures"]] == [victim.url]
    moved = stats["replica_failures"][0]["shard"]
    assert sum(stats["shards_per_replica"].values()) == 11
    err = capfd.readouterr().err
    assert f"vllm: replica {victim.url} is down (" in err and f"shard {moved} moves to another replica" in err
    assert "restarting" not in err, "a replica is not restarted mid-stage"
    assert not victim.server.is_alive() and pair.members[0].server.is_alive()


@on_vllm
def test_closing_the_set_leaves_no_server_it_started(pair):
    pids = [_pid(m) for m in pair.members]
    pair.close()
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {alive}"


class _StandIn(BaseHTTPRequestHandler):
    """A vLLM look-alike that serves the tiny model for ``answers`` completions, then fails with HTTP 500."""

    model: str
    answers: int

    def do_GET(self) -> None:  # noqa: N802
        self._reply(200, {"data": [{"id": "alignflow", "root": self.model}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.served >= self.answers:
            self._reply(500, {"error": "engine died"})
            return
        self.server.served += 1
        self._reply(200, {"choices": [{"index": 0, "text": "ok", "finish_reason": "stop", "token_ids": [1]}], "usage": {}})

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_ins(tiny_model: Path):
    servers = []
    for _ in range(2):
        handler = type("Handler", (_StandIn,), {"model": str(tiny_model), "answers": 2})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.served = 0
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_when_every_replica_is_down_one_line_names_them_and_finished_shards_stay(
    stand_ins, tiny_model, prompts, tmp_path, capfd
):
    ids, texts = prompts
    with make_sampler(SamplerConfig(base_urls=stand_ins, batch_size=1), tiny_model) as sampler:
        with pytest.raises(AllReplicasDown) as raised:
            sample_to_parquet(sampler, ids[:8], texts[:8], GREEDY, tmp_path / "s.parquet", tmp_path / "shards", 1)
    message = str(raised.value)
    assert isinstance(raised.value, UserError) and "\n" not in message, "printed as one line, no traceback"
    assert message.startswith("every vLLM replica is down: ") and all(url in message for url in stand_ins)
    assert "HTTP 500" in message and "4 of the 8 shards to make were finished and are kept" in message
    # Each stand-in answered two shards before failing; those four are on disk for the rerun.
    assert len(_shard_meta(tmp_path / "shards")) == 4
    err = capfd.readouterr().err
    assert err.count("is down (") == 2 and "has no replica left" in err


@pytest.mark.parametrize(
    "settings, key",
    [
        (["sampler.replicas=2"], "sampler.replicas"),  # the tiny recipe's backend is hf
        (["sampler.backend=vllm", "sampler.base_url=http://a:1", "sampler.base_urls=[http://b:1]"], "sampler.base_urls"),
        (["sampler.backend=vllm", "sampler.base_urls=[localhost:8000]"], "sampler.base_urls"),
        (["sampler.backend=vllm", "sampler.replicas=2", "sampler.base_urls=[http://b:1,http://c:1]"], "sampler.replicas"),
        (["sampler.backend=vllm", "sampler.replicas=2", "sampler.vllm.port=8000"], "sampler.replicas"),
        (["sampler.backend=vllm", "sampler.replicas=0"], "sampler.replicas"),
    ],
)
def test_bad_replica_settings_are_one_line_naming_the_key(settings, key):
    from methods.recipe import load_recipe

    with pytest.raises(UserError) as raised:
        load_recipe(REPO / "configs" / "evaluate-tiny.yaml", settings)
    assert f"'{key}'" in str(raised.value) and "\n" not in str(raised.value)


def test_more_replicas_than_cores_or_gpus_is_refused(monkeypatch, tiny_model):
    monkeypatch.setattr("pipeline_lib.sampling.require_vllm_python", lambda why: Path("python"))  # refused before any start
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("pipeline_lib.sampling.vllm_server.has_cuda", lambda: False)
    cores = len(os.sched_getaffinity(0))
    refused = rf"^sampler.replicas: {cores + 1} replicas need a CPU core each, and this process may use {cores}$"
    with pytest.raises(UserError, match=refused):
        make_sampler(SamplerConfig(backend="vllm", replicas=cores + 1), tiny_model)
    monkeypatch.setattr("pipeline_lib.sampling.vllm_server._cpus", lambda: [0, 1, 2, 3, 4])
    assert replica_devices(2) == ["0-2", "3-4"] and replica_devices(5) == ["0", "1", "2", "3", "4"]
    # On GPU each replica gets an equal slice of the visible GPUs, as CUDA_VISIBLE_DEVICES names them.
    monkeypatch.setattr("pipeline_lib.sampling.vllm_server.has_cuda", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert replica_devices(2) == ["2,3", "5,7"] and replica_devices(4) == ["2", "3", "5", "7"]
    for replicas in (3, 8):
        with pytest.raises(UserError, match=rf"^sampler.replicas: {replicas} replicas cannot share 4 visible GPU\(s\) evenly"):
            replica_devices(replicas)


def test_replicas_on_hf_chosen_by_auto_is_refused(monkeypatch, tiny_model):
    monkeypatch.setattr("pipeline_lib.sampling.vllm_python", lambda: None)
    with pytest.raises(UserError, match=r"^sampler.replicas: 2 replicas are vLLM servers, but the sampler is HF here \(auto: no vLLM"):
        make_sampler(SamplerConfig(replicas=2), tiny_model)


@on_vllm
def test_evaluate_on_two_replicas_answers_as_on_one_server_and_leaves_none(capsys, alignflow_home):
    """The tiny evaluate recipe end to end: one vLLM server, then its answers rebuilt on two replicas."""
    from flow_runs import run_recipe
    from methods.recipe import load_recipe
    from pipeline_lib.config import config_hash
    from pipeline_lib.sampling.vllm_server import POOL
    from pipeline_lib.store import read_manifest

    recipe_path = str(REPO / "configs" / "evaluate-tiny.yaml")
    # 70 held-out prompts: two shards (64 and 6), so both replicas answer some. Its own suite seed: nothing reused.
    settings = ["sampler.backend=vllm", "sampler.vllm.kv_cache_gib=1", "suite.seed=11", "suite.n_eval=70"]
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    run_recipe(capsys, recipe_path, *settings)
    run_dir = alignflow_home / "runs" / f"evaluate-tiny-{config_hash(load_recipe(recipe_path, settings))[:10]}"
    answers = run_dir / "round-0" / "generate-answers"
    one_server, stage_folder = pq.read_table(answers / "samples.parquet").to_pylist(), os.readlink(answers)

    two = [*settings, "sampler.replicas=2"]
    assert config_hash(load_recipe(recipe_path, two)) == config_hash(load_recipe(recipe_path, settings))
    run_recipe(capsys, recipe_path, *two, "--from-stage", "generate-answers")
    assert os.readlink(answers) == stage_folder, "the replica count is not part of the stage's key"
    assert pq.read_table(answers / "samples.parquet").to_pylist() == one_server
    stats = read_manifest(answers)["sampling"]
    assert stats["replicas"] == 2 and stats["shards_total"] == 2 and stats["replica_failures"] == []
    assert all(n > 0 for n in stats["shards_per_replica"].values()), stats
    assert not POOL._idle
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in ours and "vllm" in command_line(p)]
    assert not left, f"left running: {[p.pid for p in left]}"
