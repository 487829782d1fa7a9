"""Scaling out on one machine, in one run: generation on 1 and 2 vLLM replicas, training in 1 and 2 processes.

    .venv/bin/python bench/scaling.py                       # SmolLM2-135M: 80 MT-Bench prompts, 16 training steps
    .venv/bin/python bench/scaling.py --model tiny-llama --prompts 16 --max-new-tokens 16 --steps 4

Generation:

Everything goes through ``sample_to_parquet``, as a generation stage does.
"direct" is the single server alignflow starts today, on all cores (or GPUs),
its shards one after another. "N replicas" are N servers alignflow starts,
each on 1/max(--replicas) of the cores (or GPUs), whose shards go to whichever
is free: 1 replica against 2 on equal halves is the scaling of the replica
mechanism, direct against 2 what splitting the machine gains or costs, and
direct against "1 replica, all" (the replica mechanism around the same one
server) the overhead of the distribution layer.
Seconds are for the whole prompt set once the servers are healthy and have
answered one request (start-up, reported apart); throughput is completion tokens per second of wall time.

Training: ``bench/scaling_training.py`` (in process, then ``accelerate launch``
with 1 and 2 processes at the same global batch; in process against one
launched process is the launcher's overhead).

Prints Markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from math import ceil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine, save  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from pipeline_lib.data import load_rows  # noqa: E402
from pipeline_lib.models import load_tokenizer, resolve_model  # noqa: E402
from pipeline_lib.sampling import SamplingParams, render_chat, sample_to_parquet  # noqa: E402
from pipeline_lib.sampling.replicas import ReplicaSet  # noqa: E402
from pipeline_lib.sampling.vllm_client import VLLMSampler  # noqa: E402
from pipeline_lib.sampling.vllm_server import ServerOptions, replica_devices  # noqa: E402

from bench import scaling_training  # noqa: E402

MT_BENCH = ROOT.parent / "shared" / "data" / "mt-bench-questions.jsonl"


def generation(
    model: Path, prompts: list[str], max_new_tokens: int, replicas: tuple[int, ...] = (1, 2),
    batch_size: int = 32, shard_size: int | None = None, kv_cache_gib: int = 2,
) -> dict[str, dict]:  # fmt: skip
    """Seconds, tokens/s and start-up of the direct server and of each replica count, with their greedy texts."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    options = ServerOptions(kv_cache_gib=kv_cache_gib)
    # Shards small enough that every replica gets several, as in a long stage.
    shard_size = shard_size or max(1, ceil(len(prompts) / (4 * max(replicas))))
    shares = replica_devices(max(replicas))

    def direct() -> VLLMSampler:
        return VLLMSampler(model, options, batch_size=batch_size, progress=False)

    def replica_set(n: int) -> ReplicaSet:
        share = {"batch_size": batch_size, "progress": False, "failover": True}
        return ReplicaSet([VLLMSampler(model, replace(options, devices=d), **share) for d in shares[:n]])

    def one_replica_all() -> ReplicaSet:
        return ReplicaSet([VLLMSampler(model, options, batch_size=batch_size, progress=False, failover=True)])

    runs = {"direct": (direct, "all"), "1 replica, all": (one_replica_all, "all")}
    for n in replicas:
        runs[f"{n} replica{'s' * (n > 1)}"] = (lambda n=n: replica_set(n), " / ".join(shares[:n]))
    results = {}
    for label, (open_sampler, devices) in runs.items():
        started = time.perf_counter()
        with open_sampler() as sampler, tempfile.TemporaryDirectory() as scratch:
            # A server's first requests pay one-off costs; those belong to start-up, not throughput.
            for server in getattr(sampler, "members", [sampler]):
                server.generate(prompts[:1], replace(params, max_new_tokens=2))
            startup = time.perf_counter() - started
            out = Path(scratch) / "samples.parquet"
            ids = [f"p{i}" for i in range(len(prompts))]
            stats = sample_to_parquet(sampler, ids, prompts, params, out, Path(scratch) / "shards", shard_size)
            texts = pq.read_table(out, columns=["text"]).column("text").to_pylist()
        tokens, seconds = stats["completion_tokens"], stats["seconds"]
        results[label] = {
            "devices": devices, "startup_s": round(startup, 1), "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "shards_per_replica": stats.get("shards_per_replica"), "texts": texts,
        }  # fmt: skip
        print(f"{label:>10}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s (start-up {startup:.0f} s)", flush=True)
    return results


def markdown(results: dict[str, dict]) -> str:
    reference = results["direct"]
    lines = ["| run | devices | seconds | tok/s | vs direct | start-up (s) | greedy = direct |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        same = sum(a == b for a, b in zip(r["texts"], reference["texts"], strict=True))
        ratio = r["tokens_per_s"] / reference["tokens_per_s"]
        lines.append(
            f"| {label} | {r['devices']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | {ratio:.2f}× | {r['startup_s']:.0f} "
            f"| {same}/{len(r['texts'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=80, help="MT-Bench first turns to use (at most 80)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32, help="requests in flight per server")
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="per server, on CPU")
    parser.add_argument("--steps", type=int, default=16, help="training steps per run")
    parser.add_argument("--batch", type=int, default=8, help="global training batch")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaling.json")
    args = parser.parse_args()

    model = resolve_model(args.model)
    tokenizer = load_tokenizer(model)
    prompts = [render_chat(tokenizer, row["prompt"]) for row in load_rows(MT_BENCH, "prompt", limit=args.prompts).rows]
    print(f"{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy, model {model}", flush=True)
    results = generation(model, prompts, args.max_new_tokens, tuple(args.replicas), args.batch_size, kv_cache_gib=args.kv_cache_gib)
    print(markdown(results))
    trained = scaling_training.training(model, scaling_training.synthetic_rows(), (1, 2), args.steps, args.batch, args.max_length)
    print(scaling_training.markdown(trained))
    report = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} usable CPUs, {platform.platform()}",
        "model": str(model), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "results": {label: {k: v for k, v in r.items() if k != "texts"} for label, r in results.items()},
        "training": {"steps": args.steps, "batch": args.batch, "max_length": args.max_length, "results": trained},
    }  # fmt: skip
    save(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
